"""The video decoder's child processes, parent side (the child is :mod:`liveness._decoder`).

Every video is decoded in a child process of its own, within the memory, CPU and time
limits of :class:`liveness.video.VideoLimits` (:func:`liveness.video.load_video` speaks
the frame protocol with it). A child is either a fresh interpreter
(:func:`spawn_decoder`) or, with a :class:`Decoders`, forked from a zygote process that
has OpenCV and NumPy loaded; :class:`Child` is the handle on either.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

DECODER_SCRIPT = Path(__file__).with_name("_decoder.py")


def spawn_decoder(env: dict[str, str]) -> Child:
    """A fresh decoder child (see :mod:`liveness._decoder`)."""
    return Child(
        subprocess.Popen(
            [sys.executable, "-I", str(DECODER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
    )


class Child:
    """One decoder child: its pipes, and a way to end it and wait for it.

    Either a process of ours (a :class:`subprocess.Popen`) or a child forked by a
    :class:`Decoders` zygote, followed through a pidfd (``pid``): not our child, so its
    exit status is not known, and the pidfd makes sure that a signal reaches that process
    and no other that took its pid after it ended."""

    def __init__(self, popen=None, *, pid=None, stdin=None, stdout=None) -> None:
        self.popen = popen
        self.stdin = popen.stdin if popen is not None else stdin
        self.stdout = popen.stdout if popen is not None else stdout
        self.pidfd = os.pidfd_open(pid) if popen is None else None

    def ended(self) -> bool:
        """Whether the child has exited."""
        if self.popen is not None:
            return self.popen.poll() is not None
        return self.pidfd is None or _readable(self.pidfd, 0)

    def exit_note(self) -> str:
        """`` (exit N)`` where the exit status is known, else nothing."""
        code = self.popen.returncode if self.popen is not None else None
        return "" if code is None else f" (exit {code})"

    def kill(self) -> None:
        """Kill the child now (the wall-time timer's thread calls this); :meth:`end` waits."""
        if self.popen is not None:
            self.popen.kill()
        elif self.pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def end(self) -> None:
        """Kill the child unless it has exited, wait for it, close the pipes."""
        if self.popen is not None:
            if self.popen.poll() is None:
                self.popen.kill()
            self.popen.wait()
        elif self.pidfd is not None:
            if not self.ended():
                self.kill()
            _readable(self.pidfd, None)  # a pidfd is readable once its process has exited
            os.close(self.pidfd)
            self.pidfd = None
        for stream in (self.stdin, self.stdout):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError):
                    stream.close()


def _readable(fd: int, timeout_s: float | None) -> bool:
    """Whether ``fd`` becomes readable within ``timeout_s`` (``None``: wait). ``poll``,
    not ``select``: a busy service's descriptors can be numbered past select's 1024."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout_s is None else int(timeout_s * 1000)))


def hand_over(proc: Child, request: bytes) -> None:
    """Give a decoder child its arguments; if that fails, end the child and re-raise."""
    try:
        proc.stdin.write(request)
        proc.stdin.close()
    except BaseException:
        proc.end()
        raise


class Decoders:
    """Decoder children forked from a zygote that has OpenCV and NumPy loaded.

    Starting a decoder costs about 0.3 s of CPU (Python, NumPy and OpenCV loading; measured
    with ``python -I -c "import numpy, cv2"`` on the 2-core machine: 0.25-0.33 s user), a
    tenth of a whole verification's CPU on ``talking_head_wda_1``. A :class:`Decoders`
    starts one zygote process (``_decoder.py --zygote``, in the decoder's environment) on
    first use and forks each video's decoder from it, for a few milliseconds of CPU. The
    zygote never reads a video, so each child starts from the same clean state, sets its
    memory and CPU limits before it opens its file, and answers for that file's bytes
    only, exactly as a fresh process does (see :func:`liveness._decoder._zygote`). The
    zygote holds about 110 MB of resident memory while it waits (shared with its children
    until they write to it). A request in another environment (other allowed formats)
    ends the zygote and starts one for it. Where forking from a zygote is not possible
    (no ``os.fork`` or pidfd, or the zygote died), the decoder is a fresh process.
    Thread-safe; :meth:`close` ends the zygote.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._zygote: tuple[dict[str, str], subprocess.Popen, socket.socket] | None = None
        self._owner = os.getpid()  # the process whose zygote it is
        self._closed = False
        self.cpu_s = 0.0  # CPU time the children reported, in all (for measurements)

    def note_cpu(self, seconds: object) -> None:
        """Add a child's reported CPU time to :attr:`cpu_s`."""
        if isinstance(seconds, (int, float)) and math.isfinite(seconds):
            with self._lock:
                self.cpu_s += float(seconds)

    def spawn(self, env: dict[str, str]) -> Child:
        """A decoder child in environment ``env``, waiting for its arguments."""
        with self._lock:
            self._forget_inherited()
            if _CAN_FORK and not self._closed:
                if self._zygote is not None and (
                    self._zygote[0] != env or self._zygote[1].poll() is not None
                ):
                    self._stop_zygote()
                if self._zygote is None:
                    self._zygote, self._owner = _start_zygote(env), os.getpid()
                try:
                    return _fork_from(self._zygote[2])
                except OSError:  # the zygote died (killed from outside): a fresh child
                    self._stop_zygote()
        return spawn_decoder(env)

    def close(self) -> None:
        """End the zygote; later calls start fresh decoder processes."""
        with self._lock:
            self._closed = True
            self._forget_inherited()
            self._stop_zygote()

    def _forget_inherited(self) -> None:
        """In a process forked from the one that started the zygote (a worker pool that
        forks after a verifier was built): the zygote and its socket are that process's.
        Forget them: our copy of the socket's descriptor is closed (the other process's
        stays open) and the zygote is not killed; one of our own is started when needed."""
        if self._zygote is not None and self._owner != os.getpid():
            self._zygote[2].close()
            self._zygote = None

    def _stop_zygote(self) -> None:
        if self._zygote is None:
            return
        _, proc, ctl = self._zygote
        self._zygote = None
        ctl.close()
        proc.kill()  # it holds no state; its children run on, each with its own pipes
        proc.wait()


_CAN_FORK = hasattr(os, "fork") and hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")


def _start_zygote(env: dict[str, str]) -> tuple[dict[str, str], subprocess.Popen, socket.socket]:
    """A zygote (``_decoder.py --zygote``) with the other end of a socket pair as stdin."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", str(DECODER_SCRIPT), "--zygote"],
            stdin=theirs.fileno(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    # A zygote that stopped answering (stopped or starved) fails the request after this
    # long, and the video is decoded by a fresh process instead.
    ours.settimeout(_ZYGOTE_TIMEOUT_S)
    return env, proc, ours


_ZYGOTE_TIMEOUT_S = 30.0


def _fork_from(ctl: socket.socket) -> Child:
    """Ask the zygote on ``ctl`` for a child whose stdin and stdout are two new pipes."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        socket.send_fds(ctl, [b"f"], [in_r, out_w])
        data = b""
        while len(data) < 4:
            chunk = ctl.recv(4 - len(data))
            if not chunk:
                raise OSError("the decoder zygote ended")
            data += chunk
    except BaseException:
        os.close(in_w)
        os.close(out_r)
        raise
    finally:
        os.close(in_r)
        os.close(out_w)
    (pid,) = struct.unpack("<i", data)
    try:
        return Child(pid=pid, stdin=os.fdopen(in_w, "wb"), stdout=os.fdopen(out_r, "rb"))
    except OSError:  # the child is gone already (killed from outside)
        raise OSError("the forked decoder ended before it started") from None
