"""The witness over HTTP: ``POST <prefix>/add-checkpoint`` (C2SP tlog-witness), plus ``/healthz``.

A small threaded server from the standard library: requests are tiny and rare (one per
checkpoint per log), and every decision is made under the state lock anyway.
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from auditor.logging import get_logger
from auditor.witness.core import Witness

MAX_BODY = 1 << 20
log = get_logger("auditor.witness")


def make_server(witness: Witness, host: str, port: int, prefix: str = "") -> ThreadingHTTPServer:
    path = prefix.rstrip("/") + "/add-checkpoint"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the spec recommends

        def do_POST(self) -> None:  # noqa: N802 -- the stdlib's name
            if self.path != path:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._send(HTTPStatus.LENGTH_REQUIRED, b"Content-Length required\n", "text/plain; charset=utf-8")
                return
            if not 0 <= length <= MAX_BODY:
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"request too large\n", "text/plain; charset=utf-8")
                return
            reply = witness.add_checkpoint(self.rfile.read(length))
            log.info("add-checkpoint", status=reply.status, client=self.client_address[0])
            self._send(reply.status, reply.body, reply.content_type)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/healthz":
                self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- structured logs instead
            return

    return ThreadingHTTPServer((host, port), Handler)


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="witness-http", daemon=True)
    thread.start()
    return thread
