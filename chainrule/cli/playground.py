"""`chainrule playground`: serve the live training page on this machine and open it in a browser."""

from __future__ import annotations

import argparse
import ipaddress
import sys
import threading


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"--port takes a number from 0 to 65535, got {text!r}")
    return port


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "playground",
        help="watch a network train in your browser (a local web page)",
        description="Serve a page that trains a real chainrule network on 2-D data and draws its "
        "loss, decision boundary, weights and gradients live. One training run per server: every "
        "open tab shows the same run. Stop with Ctrl-C.",
    )
    parser.add_argument(
        "--port", type=_port, default=0, help="port to listen on (default: a free one)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    parser.add_argument("--no-browser", action="store_true", help="print the address only")
    parser.add_argument(
        "--data", metavar="CSV", help="also offer this CSV: 2 feature columns, then a label"
    )
    parser.set_defaults(run=run)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from chainrule.playground import load_csv_data, make_server

    data = load_csv_data(args.data) if args.data else None
    server = make_server(args.host, args.port, data)
    try:
        print(f"chainrule playground: {server.url}  (Ctrl-C to stop)", flush=True)
        if not _is_loopback(args.host):
            print(
                f"warning: listening on {args.host}: anyone who can reach this machine can "
                "use the playground",
                file=sys.stderr,
            )
        if not args.no_browser:
            import webbrowser

            # Some browsers' launchers block until the browser exits; the server must not wait.
            threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
        server.serve_forever()
    except KeyboardInterrupt:
        print("chainrule playground: stopped", flush=True)
    finally:
        server.stop()
    return 0
