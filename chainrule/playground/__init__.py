"""The live playground: a local web page that watches a real chainrule network train.

The network trains in the server (`session.py`); the page (`static/`) only draws the frames it is
sent over Server-Sent Events. Start it with `chainrule playground` or `make_server(...).start()`.
"""

from chainrule.playground.server import PlaygroundServer, make_server
from chainrule.playground.session import Config, ConfigError, Session, load_csv_data

__all__ = ["Config", "ConfigError", "PlaygroundServer", "Session", "load_csv_data", "make_server"]
