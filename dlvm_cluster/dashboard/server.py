"""`dlvm dashboard`: a read-only web page about every cluster, served on 127.0.0.1 only.

Anyone on this machine can reach a loopback port, and a web page in the user's browser can
make requests to one: every request must carry the random token of the URL printed at start
(none: 401; a wrong one: 403), and a Host header naming the loopback address it is served on
(a page of another site, reached by a DNS name pointed at 127.0.0.1, is refused: 403). Only
GET is answered: this first version has no write actions.

The page is one document (page/index.html with page/dashboard.css and page/dashboard.js put
inline, a nonce allowing exactly them): nothing is fetched from elsewhere, and the content
security policy forbids the browser to.
"""

from __future__ import annotations

import hmac
import json
import secrets
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dlvm_cluster.dashboard.live import Collector

HOST = "127.0.0.1"


def page(nonce: str) -> bytes:
    """The page with its stylesheet and script inline, each allowed by `nonce`."""
    folder = resources.files("dlvm_cluster.dashboard") / "page"
    html = (folder / "index.html").read_text(encoding="utf-8")
    css = (folder / "dashboard.css").read_text(encoding="utf-8")
    script = (folder / "dashboard.js").read_text(encoding="utf-8")
    html = html.replace("/*STYLE*/", css).replace("/*SCRIPT*/", script)
    return html.replace("NONCE", nonce).encode()


class Dashboard(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, collector: Collector, *, port: int = 0, token: str | None = None) -> None:
        self.collector = collector
        self.token = token or secrets.token_urlsafe(24)
        super().__init__((HOST, port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/?token={self.token}"

    def allowed_hosts(self) -> set[str]:
        return {f"{HOST}:{self.port}", f"localhost:{self.port}"}


class _Handler(BaseHTTPRequestHandler):
    server: Dashboard
    server_version = "dlvm-dashboard"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        return None  # no request log on the terminal: the URL printed at start stays in view

    def _refuse(self, code: int, why: str) -> None:
        body = (why + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self._common_headers()
        self.end_headers()
        self.wfile.write(body)

    def _common_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")

    def _allowed(self) -> tuple[bool, str]:
        """(whether to answer, the path): the Host header, then the token."""
        if self.headers.get("Host", "") not in self.server.allowed_hosts():
            self._refuse(403, "forbidden: not addressed to this dashboard's loopback address")
            return False, ""
        parts = urlsplit(self.path)
        given = parse_qs(parts.query).get("token", [])
        if not given:
            self._refuse(401, "unauthorized: open the URL `dlvm dashboard` printed, with its token")
            return False, ""
        if not hmac.compare_digest(given[0].encode(), self.server.token.encode()):
            self._refuse(403, "forbidden: wrong token")
            return False, ""
        return True, parts.path

    def do_GET(self) -> None:
        allowed, path = self._allowed()
        if not allowed:
            return
        if path == "/":
            nonce = secrets.token_urlsafe(16)
            self._send(
                page(nonce),
                "text/html; charset=utf-8",
                csp=(
                    f"default-src 'none'; script-src 'nonce-{nonce}'; "
                    f"style-src 'nonce-{nonce}'; connect-src 'self'; img-src 'self' data:; "
                    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
                ),
            )
        elif path == "/api/state":
            body = json.dumps(self.server.collector.snapshot()).encode()
            self._send(body, "application/json", csp="default-src 'none'")
        else:
            self._refuse(404, "not found")

    def _send(self, body: bytes, content_type: str, *, csp: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", csp)
        self._common_headers()
        self.end_headers()
        self.wfile.write(body)

    def _read_only(self) -> None:
        if self._allowed()[0]:
            self._refuse(405, "method not allowed: the dashboard only shows")

    do_POST = do_PUT = do_DELETE = do_PATCH = _read_only


def serve(collector: Collector, *, port: int = 0) -> Dashboard:
    """The dashboard bound to 127.0.0.1 (`port` 0: one the system picks); call
    `serve_forever()` on it, `shutdown()` from another thread."""
    return Dashboard(collector, port=port)
