"""The playground's web server: standard library only, one page, a JSON API and an event stream.

Routes: `GET /` (the page), `GET /static/<file>` (its script and style, from a fixed list),
`GET /api/options`, `GET /events` (Server-Sent Events: one JSON frame per message) and
`POST /api/{reset,start,pause,step,select}` with a JSON object body.

Safe to leave running: it binds 127.0.0.1 unless told otherwise, serves nothing but its own
files, answers 403 to a Host or Origin that is not its own (DNS rebinding, cross-site posts),
takes only bounded JSON bodies of type application/json, checks every setting (400 with a JSON
`error`), and a closed tab or broken request ends only its own thread. There is one training
session per server (see session.py): every tab shows and steers the same run.
"""

from __future__ import annotations

import ipaddress
import json
import select
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chainrule.playground.session import ConfigError, CsvData, Session

STATIC = Path(__file__).resolve().parent / "static"
# URL path -> (file in STATIC, content type). Nothing else is ever read from disk.
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
MAX_BODY = 16 * 1024  # the largest request the page sends is a few hundred bytes
MAX_STREAMS = 32  # open event streams (tabs); each holds a thread, so they are counted
# Connections served at once, streams included (each is a thread). One more is answered 503 at
# once by the accepting thread, so a flood costs a refusal, not a thread or a stalled queue.
MAX_WORKERS = 64
BACKLOG = 128  # connections the kernel queues before accept (socketserver's default is 5)
HEARTBEAT = 10.0  # seconds between comments on an idle stream; a closed tab is noticed then
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


def host_allowed(host: str | None, port: int, bound: str, address: str | None = None) -> bool:
    """Whether a Host header (or an Origin's host) names this server: its port, and as name the
    host it was bound to or the address that became (`address`), or `localhost` when that is a
    loopback address. Only a server bound to every interface (0.0.0.0 or ::) answers to any IP
    address, as LAN clients name it. DNS rebinding needs a domain name the attacker controls, and
    an IP literal other than the server's own is refused too.
    """
    if not host or len(host) > 300:
        return False
    if host.startswith("["):  # [::1]:8000
        name, _, rest = host[1:].partition("]")
        if rest and not rest.startswith(":"):
            return False
        port_text = rest[1:]
    else:
        name, _, port_text = host.partition(":")
    if port_text != "" and not port_text.isdigit():
        return False
    if (int(port_text) if port_text else 80) != port:
        return False
    name = name.lower().rstrip(".")
    own = {bound.lower().strip("[]"), (address or bound).lower()}
    own_ips = {ip for ip in map(_ip, own) if ip is not None}
    name_ip = _ip(name)
    if name in own or (name_ip is not None and name_ip in own_ips):
        return True
    if name == "localhost":
        return "localhost" in own or any(ip.is_loopback for ip in own_ips)
    return name_ip is not None and any(ip.is_unspecified for ip in own_ips)


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class Handler(BaseHTTPRequestHandler):
    server: PlaygroundServer
    server_version = "chainrule-playground"
    sys_version = ""
    timeout = 15  # seconds a read or write may stall: a half-open client cannot hold a thread

    # ---- plumbing ----
    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value, allow_nan=False).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _trusted(self) -> bool:
        """403 unless Host (and Origin, when a browser sends one) name this server."""
        address, port = self.server.server_address[:2]
        bound = self.server.bound_host
        if not host_allowed(self.headers.get("Host"), port, bound, address):
            self._error(HTTPStatus.FORBIDDEN, "this server answers only to its own address")
            return False
        origin = self.headers.get("Origin")
        if origin is not None:
            parts = urlsplit(origin)
            if parts.scheme != "http" or not host_allowed(parts.netloc, port, bound, address):
                self._error(HTTPStatus.FORBIDDEN, "cross-origin requests are refused")
                return False
        return True

    # ---- GET ----
    def do_GET(self) -> None:
        if not self._trusted():
            return
        path = self.path.split("?", 1)[0]  # exact match only: no decoding, no joining of paths
        if path in FILES:
            name, content_type = FILES[path]
            self._send(HTTPStatus.OK, (STATIC / name).read_bytes(), content_type)
        elif path == "/api/options":
            self._json(HTTPStatus.OK, self.server.session.options())
        elif path == "/events":
            self._stream()
        else:
            self._error(HTTPStatus.NOT_FOUND, "not found")

    def _stream(self) -> None:
        with self.server.streams_lock:
            if self.server.streams >= MAX_STREAMS:
                self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"at most {MAX_STREAMS} open tabs")
                return
            self.server.streams += 1
        try:
            self._send_frames()
        finally:
            with self.server.streams_lock:
                self.server.streams -= 1

    def _send_frames(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        for name, value in HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        session, seen = self.server.session, {"version": -1, "run": -1, "sent": 0}
        try:
            self.wfile.write(b"retry: 1000\n\n")
            self.wfile.flush()
            idle = 0.0
            while not self.server.stopping.is_set():
                message = session.next_message(seen, timeout=0.5)
                if message is None:
                    idle += 0.5
                    if self._client_left():
                        break
                    if idle >= HEARTBEAT:
                        self.wfile.write(b": still here\n\n")  # raises once the tab is gone
                        self.wfile.flush()
                        idle = 0.0
                    continue
                idle = 0.0
                data = json.dumps(message, allow_nan=False, separators=(",", ":"))
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()
        except (ConnectionError, TimeoutError):
            pass  # the watcher left; only this thread ends
        self.close_connection = True

    def _client_left(self) -> bool:
        """An event-stream client sends nothing after its request, so readable means closed."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # ---- POST ----
    def do_POST(self) -> None:
        if not self._trusted():
            return
        routes = {
            "/api/reset": lambda body: {"config": self.server.session.reset(body).to_dict()},
            "/api/start": lambda body: self.server.session.start(),
            "/api/pause": lambda body: self.server.session.pause(),
            "/api/step": lambda body: self.server.session.step(**_only(body, "epochs")),
            "/api/select": lambda body: self.server.session.select(
                **_only(body, "weight", "sample")
            ),
        }
        route = routes.get(self.path)
        if route is None:
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        body = self._read_json()
        if body is None:
            return
        try:
            result = route(body)
        except ConfigError as error:
            self._error(HTTPStatus.BAD_REQUEST, str(error))
            return
        except Exception:  # noqa: BLE001 (a bug: say so, print its traceback, keep serving)
            self.server.handle_error(self.request, self.client_address)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; see the server's log")
            return
        self._json(HTTPStatus.OK, {"ok": True, **(result or {})})

    def _read_json(self) -> dict[str, Any] | None:
        """The request body as a JSON object, or None after answering 400/411/413/415."""
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            # A cross-site HTML form cannot send this type, and a script must first ask (CORS).
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the body as application/json")
            return None
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
            return None
        length = int(length_text)
        if length > MAX_BODY:
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"bodies are limited to {MAX_BODY} bytes"
            )
            return None
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (ValueError, UnicodeDecodeError) as error:
            self._error(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {error}")
            return None
        except RecursionError:  # 8 000 nested '[' fit in the 16 KiB a body may have
            self._error(HTTPStatus.BAD_REQUEST, "the body is not valid JSON: nested too deeply")
            return None
        if not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
            return None
        return body


def _only(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    unknown = sorted(set(body) - set(keys))
    if unknown:
        raise ConfigError(f"unknown field {unknown[0]!r}; expected {', '.join(keys)}")
    return body


class PlaygroundServer(ThreadingHTTPServer):
    """The HTTP server with its Session; `stop()` ends the streams, training and the socket."""

    daemon_threads = True  # open event streams never keep the process alive
    request_queue_size = BACKLOG

    def __init__(self, host: str, port: int, session: Session, verbose: bool = False) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), Handler)
        self.bound_host, self.session, self.verbose = host, session, verbose
        self.stopping = threading.Event()
        self.streams, self.streams_lock = 0, threading.Lock()
        self.workers = threading.BoundedSemaphore(MAX_WORKERS)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        """Serve on a thread of the bounded pool; with every worker busy, answer 503 now."""
        if not self.workers.acquire(blocking=False):
            _refuse_overloaded(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.workers.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.workers.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # a bug: print its traceback, go on

    def start(self) -> PlaygroundServer:
        """Serve from a background thread (tests, notebooks); `stop()` ends it."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="playground-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.session.close()
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
        self.server_close()


_OVERLOADED = json.dumps({"error": "the server is busy; try again"}).encode()


def _refuse_overloaded(request: socket.socket) -> None:
    """A 503 written straight to the socket by the accepting thread, which must never block."""
    head = [
        "HTTP/1.1 503 Service Unavailable",
        "Content-Type: application/json",
        f"Content-Length: {len(_OVERLOADED)}",
        "Retry-After: 1",
        "Connection: close",
        *(f"{name}: {value}" for name, value in HEADERS.items()),
    ]
    try:
        request.setblocking(False)
        try:  # what the client has sent already: unread, closing would reset the connection
            request.recv(MAX_BODY)
        except BlockingIOError:
            pass
        request.send(("\r\n".join(head) + "\r\n\r\n").encode() + _OVERLOADED)
    except OSError:
        pass  # the client left, or its buffer is full: it gets the close instead


def make_server(
    host: str = "127.0.0.1",
    port: int = 0,
    data: CsvData | None = None,
    verbose: bool = False,
    **session_options: Any,
) -> PlaygroundServer:
    """A playground server bound to host:port (0: a free port); then `serve_forever()` or
    `start()`."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be a whole number from 0 to 65535, got {port!r}")
    session = Session(data, **session_options)
    try:
        return PlaygroundServer(host, port, session, verbose)
    except BaseException:
        session.close()
        raise
