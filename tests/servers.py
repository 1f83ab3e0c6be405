"""Real PostgreSQL and Redis servers for the tests, started on a free loopback port in a temp
directory and removed at the end (session-scoped fixtures ``postgres_server`` and
``redis_server``).

Debian's packages provide them (``apt-get install postgresql redis-server``; ``.ci/run``
installs them when missing). PostgreSQL refuses to run as root, so under root the cluster
belongs to the ``postgres`` user (``nobody`` if there is none) and its commands run through
``runuser``. Both servers require a password (random per run), listen on 127.0.0.1 only,
and keep their files in a 0700 directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "RedisServer", "postgres_server", "redis_server"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _pg_bin() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    pytest.fail("PostgreSQL is not installed: apt-get install postgresql (.ci/run does)")


@dataclass
class PostgresServer:
    """One throw-away PostgreSQL cluster; :meth:`kill` and :meth:`start` for fault tests."""

    root: Path
    port: int
    password: str
    bin: Path
    user: str | None  # run commands as this user (when the tests run as root)
    _running: bool = field(default=False, init=False)

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _cmd(self, *args: str) -> list[str]:
        return (["runuser", "-u", self.user, "--"] if self.user else []) + list(args)

    def _run(self, *args: str, timeout: float = 120) -> None:
        subprocess.run(self._cmd(*args), check=True, capture_output=True, timeout=timeout)

    @classmethod
    def create(cls) -> PostgresServer:
        pg = _pg_bin()
        root = Path(tempfile.mkdtemp(prefix="liveness-pg-"))
        root.chmod(0o700)
        user = None
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres").pw_name
            except KeyError:
                user = "nobody"
            pw_ent = pwd.getpwnam(user)
            os.chown(root, pw_ent.pw_uid, pw_ent.pw_gid)
        srv = cls(root, free_port(), secrets.token_hex(16), pg, user)
        pwfile = root / "pw"
        pwfile.write_text(srv.password)
        pwfile.chmod(0o600)
        if user:
            pw_ent = pwd.getpwnam(user)
            os.chown(pwfile, pw_ent.pw_uid, pw_ent.pw_gid)
        srv._run(
            str(pg / "initdb"),
            "-D",
            str(srv.data),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        srv.start()
        return srv

    def start(self) -> None:
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            opts,
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        self._running = True

    def stop(self) -> None:
        if self._running:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            self._running = False

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash: the next start runs crash recovery)."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        # Its backends notice the postmaster is gone and exit; wait until the port is free.
        while time.monotonic() < end and _wait_port(self.port, 0.1):
            time.sleep(0.1)
        self._running = False

    def destroy(self) -> None:
        try:
            self.stop()
        except Exception:
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class RedisServer:
    """One throw-away redis-server with an append-only file fsynced on every write."""

    root: Path
    port: int
    password: str
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @classmethod
    def create(cls) -> RedisServer:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(exe):
            pytest.fail("Redis is not installed: apt-get install redis-server (.ci/run does)")
        root = Path(tempfile.mkdtemp(prefix="liveness-redis-"))
        root.chmod(0o700)
        srv = cls(root, free_port(), secrets.token_hex(16))
        conf = root / "redis.conf"
        # In a file, not on the command line, so that the password is not in `ps`.
        conf.write_text(
            f"port {srv.port}\nbind 127.0.0.1\nrequirepass {srv.password}\n"
            f'dir {root}\nappendonly yes\nappendfsync always\nsave ""\n'
            "daemonize no\nloglevel warning\nlogfile redis.log\n"
        )
        conf.chmod(0o600)
        srv.start()
        return srv

    def start(self) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [exe, str(self.root / "redis.conf")],
            cwd=self.root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not _wait_port(self.port, 30):
            self.proc.kill()
            raise RuntimeError(f"redis-server did not start; see {self.root / 'redis.log'}")

    def kill(self) -> None:
        """SIGKILL the server (a crash: the next start replays the append-only file)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None

    def destroy(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    srv = PostgresServer.create()
    try:
        yield srv
    finally:
        srv.destroy()


@pytest.fixture(scope="session")
def redis_server():
    srv = RedisServer.create()
    try:
        yield srv
    finally:
        srv.destroy()
