"""Issue 12 item 9 (and item 6 over a real socket): the service as ``python -m
examples.recovery_service`` serves it, attacked with connections that never finish their
headers and with a 400 MB Content-Length."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import time
import urllib.request

import pytest

from .conftest import PYTHON, ROOT, child_env

SLOW = 300  # connections that never finish their headers (issue: 1,100)
CAP = 128
HEADER_TIMEOUT = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthz(port: int, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture(scope="module")
def served(tmp_path_factory, model_dir):
    tmp = tmp_path_factory.mktemp("served")
    key = tmp / "operator.key"
    key.write_text("op-Served-Lq7Zx3Mv9Tk2Wb5R")
    key.chmod(0o600)
    port = free_port()
    log = open(tmp / "server.log", "wb")
    env = child_env()
    env.pop("LIVENESS_OPERATOR_KEY", None)
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "examples.recovery_service",
            "--db",
            str(tmp / "recovery.sqlite3"),
            "--model-dir",
            str(model_dir),
            "--port",
            str(port),
            "--operator-key-file",
            str(key),
            "--max-connections",
            str(CAP),
            "--header-timeout",
            str(HEADER_TIMEOUT),
        ],  # fmt: skip
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    while not healthz(port, 0.5):
        assert proc.poll() is None, (tmp / "server.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.3)
    yield port, proc, tmp / "server.log"
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def test_connections_that_never_finish_their_headers(served):
    port, proc, log = served
    base_fds = open_fds(proc.pid)
    slow = []
    for _ in range(SLOW):
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        except OSError:
            pass
        slow.append(s)
    try:
        time.sleep(0.3)
        # The cap holds: the server keeps at most CAP of them open.
        assert open_fds(proc.pid) <= base_fds + CAP + 8
        # Another address is served at once (one address gets at most 64 connections).
        t = time.perf_counter()
        conn = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=2, source_address=("127.0.0.2", 0)
        )
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200 and time.perf_counter() - t < 1.0
        conn.close()
        t = time.perf_counter()
        while not healthz(port, 1.0):
            assert time.perf_counter() - t < HEADER_TIMEOUT + 5, "healthz never answered"
            time.sleep(0.1)
        waited = time.perf_counter() - t
        print(f"healthz answered after {waited:.2f} s with {SLOW} slow connections")
        time.sleep(HEADER_TIMEOUT + 0.5)
        # Every slow connection has been closed by the server by now.
        closed = 0
        for s in slow:
            try:
                s.settimeout(0.5)
                closed += s.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == len(slow)
        assert open_fds(proc.pid) <= base_fds + 8
    finally:
        for s in slow:
            s.close()
    assert log.stat().st_size < 1_000_000  # no flood of tracebacks


def test_huge_content_length_is_refused_before_the_body(served):
    port, proc, _log = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        t = time.perf_counter()
        s.sendall(
            b"POST /recoveries HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 400000000\r\n\r\n"
        )
        reply = s.recv(4096)
        elapsed = time.perf_counter() - t
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert elapsed < 2.0
    # Operator endpoints over the wire need the key too.
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/accounts/alice/reference", method="PUT", data=b""
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 401


def test_oversized_websocket_message_is_refused_by_the_server(served):
    # uvicorn's default WebSocket message limit is 16 MiB; the served config allows a frame
    # (2 MiB) and no more, and closes the connection before the app reads the message.
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    port, proc, _log = served
    url = f"ws://127.0.0.1:{port}/recoveries/{'A' * 22}/live"
    with connect(url, open_timeout=5, max_size=None) as ws:
        t = time.perf_counter()
        ws.send(b"\xff" * (3 * 1024 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=5)
        elapsed = time.perf_counter() - t
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert elapsed < 2.0
    assert healthz(port)
