"""The end-to-end helpers themselves: waiting on a starting server leaks no socket."""

from __future__ import annotations

import gc
import http.server
import threading
from collections.abc import Iterator

import pytest

from tests.support import LOOPBACK, http_text, wait_for


class _StartingUp(http.server.BaseHTTPRequestHandler):
    """503 for the first three requests (like /-/ready while starting), then 200."""

    answered = 0

    def do_GET(self) -> None:  # the http.server API names it so
        type(self).answered += 1
        ready = type(self).answered > 3
        body = b"ready" if ready else b"starting"
        self.send_response(200 if ready else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def starting_server() -> Iterator[str]:
    _StartingUp.answered = 0
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _StartingUp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{LOOPBACK}:{server.server_address[1]}/-/ready"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_waiting_through_http_errors_leaves_no_socket_open(starting_server: str) -> None:
    """HTTP errors met while waiting are closed, not kept: a kept HTTPError held its socket
    in a reference cycle until the cyclic GC, which warned about it in a later test."""
    assert wait_for("ready", lambda: http_text(starting_server), 10, every=0.01) == "ready"
    gc.collect()  # an unclosed socket found here fails the test (filterwarnings = error)
