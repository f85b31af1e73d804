"""Abuse of a real `alertbridge serve` process (issue 30): streams that never read, the stream
worker SIGKILLed while streams open, a sign-in flood, redirects off the site, a key signing
in again and again, wrong tokens, and an export onto a full filesystem. The in-process
versions (tests/test_stream.py, test_fanout.py, test_web.py) show how; these show that the
process an operator runs does it."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench.ingest import build_store
from bridge.host import apikeys
from tests.payloads import am_alert, notification
from tests.support import (
    LOOPBACK,
    Proc,
    bridge_env,
    free_port,
    http_json,
    running,
    scraped,
    start_bridge,
    wait_for,
)

pytestmark = pytest.mark.e2e
HOOK = "abuse-hook"
TCP_CLOSE = 7  # tcp_info's state of a connection reset (linux/tcp_states.h)
#: max_connections 64: the server serves at most 16 streams itself (a quarter).
CONFIG = """
server:
  max_connections: 64
  stream_drain_timeout: {drain}
  signin_attempts: {signins}
  token_failures: 5/minute
"""


class Bridge:
    def __init__(self, proc: Proc, base: str, port: int, tokens: dict[str, str]) -> None:
        self.proc, self.base, self.port, self.tokens = proc, base, port, tokens

    def streams(self, served_by: str) -> float:
        return scraped(self.base, "alertbridge_event_streams", served_by=served_by)

    def fire(self, *alerts: dict[str, Any]) -> None:
        status, body = http_json(f"{self.base}/api/v1/alertmanager", notification(*alerts),
                                 token=HOOK)  # fmt: skip
        assert status == 200, body

    def worker(self) -> psutil.Process:
        found = [child for child in psutil.Process(self.proc.popen.pid).children()
                 if "stream-worker" in child.cmdline()]  # fmt: skip
        assert len(found) == 1, found
        return found[0]


@contextmanager
def serving(tmp: Path, drain: int = 30, signins: str = "5/minute") -> Iterator[Bridge]:
    keys = tmp / "bridge.db.keys.json"  # beside the store: the default keys file
    tokens = {n: apikeys.add(keys, n, r)[1] for n, r in (("rita", "read"), ("root", "write"))}
    config = tmp / "alertbridge.yml"
    config.write_text(CONFIG.format(drain=drain, signins=signins))
    port = free_port()
    env = bridge_env(ALERTBRIDGE_WEBHOOK_TOKEN=HOOK)
    proc = start_bridge(tmp, port, env, config=config)
    with running(proc):
        bridge = Bridge(proc, f"http://{LOOPBACK}:{port}", port, tokens)
        wait_for("the stream worker", lambda: scraped(bridge.base, "alertbridge_stream_worker_up"))
        yield bridge


def stalled_stream(bridge: Bridge) -> socket.socket:
    """A stream whose client never reads, with a 4 KiB receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((LOOPBACK, bridge.port))
    sock.sendall(b"GET /api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Authorization: Bearer %s\r\n\r\n" % bridge.tokens["rita"].encode())  # fmt: skip
    return sock


def is_reset(sock: socket.socket) -> bool:
    """The connection was reset by the server (TCP_CLOSE here, without reading: a close after
    a flush would leave it in CLOSE_WAIT with the data still unread)."""
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == TCP_CLOSE)


def test_streams_that_never_read_are_reset_at_the_drain_timeout(tmp_path: Path) -> None:
    """Eight streams with 4 KiB buffers that never read, served by the stream worker: with
    3 MB of events behind them each is reset within seconds of server.stream_drain_timeout
    (1 s here), and the worker reports them gone."""
    with serving(tmp_path, drain=1) as bridge, ExitStack() as closing:
        socks = [closing.enter_context(stalled_stream(bridge)) for _ in range(8)]
        wait_for("the worker serving the eight", lambda: bridge.streams("worker") == 8)
        pad = "x" * 4000
        for batch in range(8):
            bridge.fire(*[am_alert(f"{batch * 100 + i:016x}", pad=pad) for i in range(100)])
        started = time.monotonic()
        wait_for("every stalled stream reset", lambda: all(is_reset(s) for s in socks), 30)
        assert time.monotonic() - started < 15  # 1 s once its buffers filled, not never
        wait_for("the worker's count back to 0", lambda: bridge.streams("worker") == 0)
        assert bridge.worker().memory_info().rss < 300 * 2**20


def open_stream(bridge: Bridge, last_id: str | None = None) -> Any:
    request = urllib.request.Request(f"{bridge.base}/api/v1/events/stream")
    request.add_header("Authorization", f"Bearer {bridge.tokens['rita']}")
    if last_id is not None:
        request.add_header("Last-Event-ID", last_id)
    return urllib.request.urlopen(request, timeout=10)


def next_event(stream: Any) -> tuple[str, dict[str, Any]]:
    """The next event's (id, data), reading line by line (bounded by the socket timeout)."""
    event_id = ""
    for _ in range(1000):
        line = stream.readline()
        assert line, "the stream ended"
        if line.startswith(b"id: "):
            event_id = line[4:].strip().decode()
        elif line.startswith(b"data: "):
            return event_id, json.loads(line[6:])
    raise AssertionError("no event in 1,000 lines")


def ended(stream: Any) -> bool:
    """Read to the stream's end or its reset (bounded by the socket timeout); True when it
    ended, which an EventSource answers by resuming (Last-Event-ID)."""
    try:
        for _ in range(10_000):
            if not stream.readline():
                return True
    except (ConnectionResetError, http.client.IncompleteRead):
        return True
    return False


def test_the_worker_killed_while_streams_open_never_locks_the_webhook_out(
    tmp_path: Path,
) -> None:
    """SIGKILL the stream worker with streams open: theirs end; while it restarts the server
    serves new ones itself, 4 at most (max_connections 64 / 16: 503 too_many_streams past
    them; with no worker configured it would serve 16), and Alertmanager's
    webhook is answered; once the new worker is up the server ends the streams it held, and
    their clients resume with the worker by Last-Event-ID, missing nothing."""
    with serving(tmp_path) as bridge, ExitStack() as closing:
        first = [closing.enter_context(open_stream(bridge)) for _ in range(2)]
        wait_for("the worker serving two", lambda: bridge.streams("worker") == 2)
        old = bridge.worker()
        old.send_signal(signal.SIGKILL)
        for stream in first:
            assert ended(stream)
        wait_for("the server seeing the worker gone",
                 lambda: bridge.streams("worker") == 0, every=0.02)  # fmt: skip
        here = []
        refused = []
        for _ in range(20):
            try:
                here.append(closing.enter_context(open_stream(bridge)))
            except urllib.error.HTTPError as exc:
                refused.append((exc.code, json.loads(exc.read())))
                exc.close()
        assert len(here) == 4, refused
        assert {code for code, _ in refused} == {503}
        assert {body["error"] for _, body in refused} == {"too_many_streams"}
        assert "while its stream worker restarts" in refused[0][1]["message"]
        assert bridge.streams("server") == 4
        bridge.fire(am_alert("00000000000000a1"))  # heard meanwhile, and streamed here
        heard = [next_event(stream) for stream in here]
        assert {data["alert_id"] for _, data in heard} == {1}
        last = [event_id for event_id, _ in heard]
        wait_for("a new worker", lambda: scraped(bridge.base, "alertbridge_stream_worker_up"))
        assert bridge.worker().pid != old.pid
        for stream in here:
            assert ended(stream)  # handed back: ended here, to resume with the worker
        # at once (the hub lets go of them), not at its next keepalive, 15 s on
        wait_for("the server holding none", lambda: bridge.streams("server") == 0, 5)
        back = [closing.enter_context(open_stream(bridge, n)) for n in last]
        wait_for("the worker serving them", lambda: bridge.streams("worker") == 4)
        bridge.fire(am_alert("00000000000000a2"))
        for stream in back:  # the next event after the last each had: nothing missed
            assert next_event(stream)[1]["alert_id"] == 2


def post_form(bridge: Bridge, path: str, fields: dict[str, str],
              cookie: str = "") -> http.client.HTTPResponse:  # fmt: skip
    """A form POST that follows no redirect: the response, its body read."""
    conn = http.client.HTTPConnection(LOOPBACK, bridge.port, timeout=10)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        headers["Cookie"] = cookie
    conn.request("POST", path, urllib.parse.urlencode(fields), headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def session_of(response: http.client.HTTPResponse) -> str:
    cookie = response.headers["Set-Cookie"]
    assert cookie, response.headers
    return str(cookie.split(";", 1)[0])


def page_status(bridge: Bridge, cookie: str) -> int:
    conn = http.client.HTTPConnection(LOOPBACK, bridge.port, timeout=10)
    conn.request("GET", "/alerts", headers={"Cookie": cookie})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status


def test_a_sign_in_flood_is_429_and_wrong_tokens_too(tmp_path: Path) -> None:
    """server.signin_attempts 5/minute: the sixth sign-in from an address is 429 with
    Retry-After, counted, the right key included; past token_failures wrong bearer tokens the
    API is 429 to that address too, while a right token still gets its answer."""
    with serving(tmp_path) as bridge:
        statuses = [post_form(bridge, "/signin", {"token": "abk_guess", "next": "/"}).status
                    for _ in range(5)]  # fmt: skip
        assert statuses == [401] * 5
        flood = post_form(bridge, "/signin", {"token": bridge.tokens["root"], "next": "/"})
        assert flood.status == 429
        assert 0 < int(flood.headers["Retry-After"]) <= 60
        assert scraped(bridge.base, "alertbridge_attempts_limited_total", what="signin") == 1
        api = [http_json(f"{bridge.base}/api/v1/alerts", token="abk_wrong")[0]
               for _ in range(6)]  # fmt: skip
        assert api == [401] * 5 + [429]
        status, body = http_json(f"{bridge.base}/api/v1/alerts", token=bridge.tokens["rita"])
        assert status == 200, body
        assert scraped(bridge.base, "alertbridge_attempts_limited_total", what="token") == 1


def test_sign_in_never_redirects_off_the_site_and_a_key_signs_nobody_out(
    tmp_path: Path,
) -> None:
    """The redirect variants land on a path of this server; a read key signing in 30 times
    keeps 20 sessions of its own and leaves the operator's session alone."""
    with serving(tmp_path, signins="1000/minute") as bridge:
        root = bridge.tokens["root"]
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example",
                       "/\t/evil.example", "/\n/evil.example", "/\r/evil.example",
                       " //evil.example", "/\\/evil.example", "javascript:alert(1)"):  # fmt: skip
            response = post_form(bridge, "/signin", {"token": root, "next": target})
            assert response.status == 303, target
            location = response.headers["Location"]
            assert location.startswith("/"), (target, location)
            assert not location.startswith("//"), (target, location)
        conn = http.client.HTTPConnection(LOOPBACK, bridge.port, timeout=10)
        conn.request("GET", "/signin?next=/%09/evil.example")
        page = conn.getresponse().read().decode()
        conn.close()
        carried = re.search(r'name="next" value="([^"]*)"', page)
        assert carried is not None, page[:500]
        assert not carried[1].startswith("//"), carried[1]
        operator = session_of(post_form(bridge, "/signin", {"token": root, "next": "/"}))
        rita = [session_of(post_form(bridge, "/signin", {"token": bridge.tokens["rita"],
                                                         "next": "/"}))
                for _ in range(30)]  # fmt: skip
        assert page_status(bridge, operator) == 200
        assert page_status(bridge, rita[-1]) == 200
        assert page_status(bridge, rita[0]) == 303  # its own oldest went first: sign in again


@contextmanager
def small_filesystem(where: Path, size: str) -> Iterator[Path]:
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if mount is None or umount is None:
        pytest.skip("no mount(8) here")
    where.mkdir()
    mounted = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run([umount, str(where)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
def test_an_export_into_a_full_filesystem_is_one_line_and_keeps_the_old_file(
    tmp_path: Path,
) -> None:
    """An export that fills a 1 MiB filesystem: one line naming it, exit 1, the previous
    output intact and no temporary file left."""
    db = tmp_path / "a.db"
    build_store(db, 20_000)
    with small_filesystem(tmp_path / "small", "1m") as small:
        out = small / "alerts.csv"
        out.write_text("previous\n")
        proc = subprocess.run(
            [sys.executable, "-m", "bridge", "export", "--format", "csv", "--output", str(out),
             "--db", str(db)],
            capture_output=True, timeout=120, check=False, env=bridge_env(),
        )  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.decode().splitlines()[-1:] == [
            "alertbridge: error: cannot go on: no space left on device"
        ], proc.stderr.decode()
        assert "Traceback" not in proc.stderr.decode()
        assert out.read_text() == "previous\n"
        assert sorted(p.name for p in small.iterdir()) == ["alerts.csv"]
