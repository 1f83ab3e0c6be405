"""Issue 12's attacks on the served recovery service, with the service's memory and time.

    python -m benchmarks.service_attacks [--code DIR] [--slow 1100] [--body-mb 400]

Starts ``python -m examples.recovery_service`` from ``--code`` (a checkout; default this
one) on a free loopback port, in its own process with the usual limit of 1024 open files,
and replays: a reference replaced without
credentials, a status read without the token, a huge JSON body sent chunked, a large
``text/plain`` body, five junk uploads against one account followed by the owner's own start
(from another loopback address, 127.0.0.2), a burst of recovery starts from one client (for
another account), a weak signing key at start, and ``--slow`` connections that never finish
their headers. It samples the service's resident memory (psutil) during each attack and
prints one JSON object. Code without ``--operator-key-file`` is started without one.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
OPERATOR_KEY = "op-Bench-Xq7Lm2Tv9Kw4Zr8N"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Peak:
    """Peak RSS of a process (MB) while the block runs, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.start = self.peak = self._rss()
        self._stop = threading.Event()

    def _rss(self) -> float:
        try:
            return self.proc.memory_info().rss / 2**20
        except psutil.Error:
            return 0.0

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> Peak:
        self.t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.seconds = time.perf_counter() - self.t0

    def report(self, **kw) -> dict:
        return {
            "rss_before_mb": round(self.start),
            "peak_rss_increase_mb": round(self.peak - self.start),
            "seconds": round(self.seconds, 2),
            **kw,
        }


def request(port, method, path, body=None, headers=None, source="127.0.0.1", timeout=60):
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0)
    )
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, data, dict(r.getheaders())
    except (OSError, http.client.HTTPException) as e:
        return f"error: {type(e).__name__}", b"", {}
    finally:
        conn.close()


def send_chunked(port: int, path: str, total: int, source: str) -> tuple:
    """POST ``total`` bytes of JSON, chunked, reading the answer as soon as there is one;
    returns (status or error, bytes sent by then)."""
    import select

    s = socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(source, 0))
    sent = 0
    try:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        piece = b"x" * 2**20
        chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        while sent < total:
            if select.select([s], [], [], 0)[0]:
                break
            try:
                s.sendall(chunk)
            except OSError:
                break
            sent += len(piece)
        else:
            s.sendall(b"0\r\n\r\n")
        s.settimeout(120)
        head = s.recv(4096)
        status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/") else f"no answer {head!r}"
        return status, sent
    except OSError as e:
        return f"error: {type(e).__name__}", sent
    finally:
        s.close()


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    boundary = "bench" + os.urandom(8).hex()
    out = b""
    for k, v in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    for k, (name, data, kind) in files.items():
        out += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
                f"Content-Type: {kind}\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


NOFILE = 1024  # the usual default soft limit of open files for a service


def _limit_files() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def start_service(code: Path, model_dir: str, tmp: Path, extra_env=None):
    help_text = subprocess.run(
        [sys.executable, "-m", "examples.recovery_service", "--help"],
        cwd=code,
        env={**os.environ, "PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
    ).stdout
    hardened = "--operator-key-file" in help_text
    port = free_port()
    args = [
        sys.executable, "-m", "examples.recovery_service",
        "--db", str(tmp / "recovery.sqlite3"), "--model-dir", model_dir, "--port", str(port),
    ]  # fmt: skip
    if hardened:
        key = tmp / "operator.key"
        key.write_text(OPERATOR_KEY)
        key.chmod(0o600)
        args += ["--operator-key-file", str(key)]
    env = {**os.environ, "PYTHONPATH": str(code), **(extra_env or {})}
    env.pop("LIVENESS_OPERATOR_KEY", None)
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen(
        args, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_limit_files
    )
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            return None, port, hardened
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc, port, hardened
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                return None, port, hardened
            time.sleep(0.3)


def reference_png(data_dir: Path) -> bytes:
    import cv2

    cap = cv2.VideoCapture(str(data_dir / "videos/talking_head_wda_1.mp4"))
    image = None
    for _ in range(int(7.5 * 25)):
        ok, frame = cap.read()
        if not ok:
            break
        image = frame
    cap.release()
    return cv2.imencode(".png", image)[1].tobytes()


def attacks(code: Path, model_dir: str, data_dir: Path, slow: int, body_mb: int) -> dict:
    out: dict = {"code": str(code)}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        weak = tmp / "weak"
        weak.mkdir()
        proc, _port, _ = start_service(code, model_dir, weak, {"LIVENESS_SECRET_KEY": "a" * 16})
        out["weak_signing_key_aaaaaaaaaaaaaaaa"] = {
            "service_started": proc is not None,
            "log": (weak / "server.log").read_text()[-300:] if proc is None else "",
        }
        if proc is not None:
            proc.terminate()
            proc.wait()
        main = tmp / "main"
        main.mkdir()
        env = {"LIVENESS_SECRET_KEY": "bench-" + os.urandom(12).hex()}
        proc, port, hardened = start_service(code, model_dir, main, env)
        assert proc is not None, (main / "server.log").read_text()[-2000:]
        out["hardened"] = hardened
        op = {"Authorization": f"Bearer {OPERATOR_KEY}"} if hardened else {}
        photo = reference_png(data_dir)
        try:
            body, ctype = multipart({}, {"photo": ("p.png", photo, "image/png")})
            status, data, _ = request(
                port, "PUT", "/accounts/alice/reference", body, {**op, "Content-Type": ctype}
            )
            assert status == 200, (status, data[:300])
            status, data, _ = request(
                port, "PUT", "/accounts/bob/reference", body, {**op, "Content-Type": ctype}
            )
            assert status == 200, (status, data[:300])
            # item 1: replace alice's reference without credentials
            status, _, _ = request(
                port, "PUT", "/accounts/alice/reference", body, {"Content-Type": ctype}
            )
            out["item1_replace_reference_without_credentials"] = {"status": status}
            status, data, _ = request(
                port, "POST", "/recoveries", json.dumps({"account": "alice"}).encode(),
                {"Content-Type": "application/json"}, source="127.0.0.3",
            )  # fmt: skip
            rid = json.loads(data)["recovery_id"] if status == 200 else "x" * 22
            status, _, _ = request(port, "GET", f"/recoveries/{rid}")
            out["item1_status_read_without_token"] = {"status": status}

            # item 6: a huge JSON body, chunked (no Content-Length)
            with Peak(proc.pid) as p:
                status, sent = send_chunked(port, "/recoveries", body_mb * 2**20, "127.0.0.4")
            out[f"item6_json_body_{body_mb}MB_chunked"] = p.report(
                status=status, mb_sent_before_answer=round(sent / 2**20, 2)
            )
            text = b"z" * (100 * 2**20)
            with Peak(proc.pid) as p:
                status, data, _ = request(
                    port, "POST", "/recoveries", text, {"Content-Type": "text/plain"},
                    source="127.0.0.4",
                )  # fmt: skip
            out["item6_text_plain_100MB"] = p.report(
                status=status, response_bytes=len(data), echoed=b"zzzzzzzz" in data
            )

            # item 5: five junk uploads from one client, then the owner from another
            junk = []
            with Peak(proc.pid) as p:
                for _ in range(5):
                    s, data, _ = request(
                        port, "POST", "/recoveries", json.dumps({"account": "alice"}).encode(),
                        {"Content-Type": "application/json"}, source="127.0.0.5",
                    )  # fmt: skip
                    if s != 200:
                        junk.append(s)
                        continue
                    sess = json.loads(data)
                    body, ctype = multipart(
                        {"token": sess["token"]}, {"video": ("v.webm", b"junk" * 64, "video/webm")}
                    )
                    s, _, _ = request(
                        port, "POST", sess["upload_url"], body, {"Content-Type": ctype},
                        source="127.0.0.5",
                    )  # fmt: skip
                    junk.append(s)
            owner, _, _ = request(
                port, "POST", "/recoveries", json.dumps({"account": "alice"}).encode(),
                {"Content-Type": "application/json"}, source="127.0.0.2",
            )  # fmt: skip
            attacker, _, _ = request(
                port, "POST", "/recoveries", json.dumps({"account": "alice"}).encode(),
                {"Content-Type": "application/json"}, source="127.0.0.5",
            )  # fmt: skip
            out["item5_five_junk_uploads"] = p.report(
                junk_statuses=junk, owner_start_after=owner, attacker_start_after=attacker
            )

            # item 5: a burst of starts from one client (another account: alice may be
            # blocked by now)
            codes: dict = {}
            with Peak(proc.pid) as p:
                for _ in range(200):
                    s, _, _ = request(
                        port, "POST", "/recoveries", json.dumps({"account": "bob"}).encode(),
                        {"Content-Type": "application/json"}, source="127.0.0.6",
                    )  # fmt: skip
                    codes[str(s)] = codes.get(str(s), 0) + 1
            out["item5_200_starts_from_one_client"] = p.report(statuses=codes)

            # item 9: connections that never finish their headers
            socks = []
            with Peak(proc.pid) as p:
                for _ in range(slow):
                    s = socket.socket()
                    s.settimeout(2)
                    try:
                        s.connect(("127.0.0.1", port))
                        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                    except OSError:
                        pass
                    socks.append(s)
                time.sleep(0.5)
                fds = len(psutil.Process(proc.pid).open_files()) + len(
                    psutil.Process(proc.pid).net_connections()
                )
                t = time.perf_counter()
                ok = False
                while time.perf_counter() - t < 60:
                    try:
                        hs, _, _ = request(port, "GET", "/healthz", source="127.0.0.2", timeout=2)
                        if hs == 200:
                            ok = True
                            break
                        time.sleep(0.2)
                    except OSError:
                        time.sleep(0.2)
                healthz_s = time.perf_counter() - t
            for s in socks:
                s.close()
            out[f"item9_{slow}_header_less_connections"] = p.report(
                server_sockets_after_0_5s=fds,
                healthz_ok=ok,
                healthz_seconds=round(healthz_s, 2),
                log_bytes=(main / "server.log").stat().st_size,
            )
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--code", type=Path, default=ROOT)
    ap.add_argument("--model-dir", default=os.environ.get("LIVENESS_MODEL_DIR"))
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("LIVENESS_DATA_DIR", ROOT.parent / "shared" / "data")),
    )
    ap.add_argument("--slow", type=int, default=1100)
    ap.add_argument("--body-mb", type=int, default=400)
    args = ap.parse_args(argv)
    report = attacks(args.code.resolve(), args.model_dir, args.data_dir, args.slow, args.body_mb)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
