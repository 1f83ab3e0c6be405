"""The video decoder child process (run as a script by :mod:`liveness.video`, never imported).

It is a separate process so that a hostile file can cost at most its memory and time
budget: ``RLIMIT_AS`` and ``RLIMIT_CPU`` are set here before the file is opened (and before
OpenCV is imported, except in a child forked from the ``--zygote``, which has OpenCV and
NumPy loaded: see :func:`_zygote` and :class:`liveness.decoders.Decoders`); the parent kills
the child after a wall-time limit, and the FFmpeg demuxers and protocols are whitelisted
through ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` (only ``file``; only the demuxers the allowed
formats need), so that no playlist or concat file can make FFmpeg open another file.

Protocol: one JSON line of arguments on stdin; on stdout, one message per kept frame
(``b"F"``, then ``<index:u32><t:f64><h:u32><w:u32>`` and ``h*w*3`` BGR bytes), and one final
message: ``b"E"`` (end) or ``b"X"`` (refusal), then ``<n:u32>`` and ``n`` bytes of JSON.

A container may declare 320x240 and carry 16000x16000 frames between the sampled ones.
OpenCV scales every frame it hands out to the declared size, so such frames cannot be seen
in the pixels; they are seen in what decoding them costs: after every decoded frame (kept
or not) the process's peak resident memory is compared with what frames of the declared
size can need (:func:`frame_allowance`), and decoding stops with a refusal when it is over.
The address-space limit bounds whatever slips past that. This file must stay importable
without the ``liveness`` package (it runs with ``python -I path/to/_decoder.py``, and
importing the package would load the face models' runtimes).
"""

from __future__ import annotations

import json
import math
import resource
import struct
import sys

FRAME_HEADER = struct.Struct("<IdII")
LENGTH = struct.Struct("<I")


def _send(out, kind: bytes, doc: dict) -> None:
    data = json.dumps(doc).encode()
    out.write(kind + LENGTH.pack(len(data)) + data)
    out.flush()


def _shrink(cv2, image, long_side: int):
    h, w = image.shape[:2]
    if max(h, w) <= long_side:
        return image
    s = long_side / max(h, w)
    return cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def frame_allowance(width: int, height: int) -> int:
    """Bytes of resident memory that decoding frames of ``width`` x ``height`` may add to the
    process: 32 MB plus 24 BGR frames. Measured growth while decoding the 12 clips in
    ``shared/data/videos`` and two phone clips of ``videos-wild`` (MOV 720x1280, 3GP): 7 to
    20 MB, at most 19 frames' worth for the small ones. A 320x240 stream hiding 8000x8000
    frames grew by 104 MB (allowed: 37.5 MB); a hidden 16000x16000 frame needs 384 MB."""
    return 32 * 1024 * 1024 + 24 * width * height * 3


def _status_kb(field: bytes) -> int | None:
    """One ``kB`` field of ``/proc/self/status`` in bytes (``None``: unreadable)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_rss() -> int:
    """This process's peak resident memory in bytes: ``VmHWM``, which belongs to the address
    space made at exec (``ru_maxrss`` is inherited across exec from the parent that forked
    us, a server holding its models, and would hide the decoder's own growth)."""
    got = _status_kb(b"VmHWM:")
    return got if got is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _mapped() -> int:
    """This process's address space now, in bytes (``VmSize``; 0 if unreadable)."""
    return _status_kb(b"VmSize:") or 0


def _decode(args: dict, out) -> dict:
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    cap = cv2.VideoCapture(args["path"], cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            return {"error": "decode", "message": "not a readable video file"}
        # Rotation is applied by the parent from the container's matrix, parsed safely
        # (liveness.video.mp4_rotation): OpenCV's own reading turns a mirror matrix into
        # 180 degrees and an all-zero one into -2147483287.
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
        fps = cap.get(cv2.CAP_PROP_FPS)
        if not math.isfinite(fps) or fps <= 0 or fps > 1000:
            fps = 30.0  # containers without a rate (some webm): timestamps still rule
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        max_pixels = args["max_pixels"]
        if w * h > max_pixels:
            return {
                "error": "limit",
                "message": f"frames of {w}x{h} are over the limit of {max_pixels} pixels",
            }
        ceiling = _peak_rss() + frame_allowance(w, h)
        step = 1.0 / args["sample_fps"] if args["sample_fps"] else 0.0
        next_t = None
        index, last_t, t0 = 0, -1.0, 0.0
        kept = 0
        while True:
            if not cap.grab():
                break
            if _peak_rss() > ceiling:
                return {
                    "error": "limit",
                    "message": f"decoding frame {index} needed more memory than frames of "
                    f"the declared {w}x{h} can: the stream holds larger frames",
                }
            pos = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            # Some containers report no or non-increasing timestamps; fall back to the rate.
            t = (
                pos
                if (math.isfinite(pos) and pos > last_t and (pos > 0 or index == 0))
                else (index / fps)
            )
            if index == 0:
                t0 = t
            last_t = t
            t -= t0
            if t > args["max_duration_s"]:
                return {
                    "error": "limit",
                    "message": f"longer than the limit of {args['max_duration_s']:.0f} s",
                }
            index += 1
            if index > args["max_frames"]:
                return {
                    "error": "limit",
                    "message": f"more than the limit of {args['max_frames']} frames",
                }
            if next_t is None:
                keep, next_t = True, t + step
            elif t + 1e-6 < next_t:
                keep = False
            else:
                # Advance from the planned instant, not from t, so the rate does not drift.
                keep, next_t = True, max(next_t + step, t + step / 2)
            if not keep:
                continue
            ok, image = cap.retrieve()
            if not ok or image is None:
                continue
            if image.shape[0] * image.shape[1] > max_pixels:
                return {
                    "error": "limit",
                    "message": f"frame {index - 1} is {image.shape[1]}x{image.shape[0]}, over "
                    f"the limit of {max_pixels} pixels",
                }
            image = np.ascontiguousarray(_shrink(cv2, image, args["long_side"]))
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                return {"error": "decode", "message": "frames are not 8-bit colour images"}
            out.write(b"F" + FRAME_HEADER.pack(index - 1, t, image.shape[0], image.shape[1]))
            out.write(image.data)
            kept += 1
        out.flush()
        return {"fps": fps, "frames_decoded": index, "kept": kept}
    finally:
        cap.release()


def main(argv: list[str]) -> int:
    if "--zygote" in argv:
        return _zygote()
    return _one_video()


def _one_video() -> int:
    """Read the arguments from stdin, decode, and write the frames and the end to stdout."""
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the parent closed our stdin without a request
    args = json.loads(line)
    out = sys.stdout.buffer
    try:
        resource.setrlimit(resource.RLIMIT_AS, (args["memory_bytes"], args["memory_bytes"]))
        cpu = max(1, int(args["cpu_seconds"]))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        mapped = _mapped()
        if mapped > args["memory_bytes"]:  # forked from the zygote: OpenCV is loaded already
            doc = {
                "error": "memory",
                "message": f"the decoder's memory limit ({args['memory_bytes'] >> 20} MB) is "
                f"below what it holds before decoding ({mapped >> 20} MB)",
            }
        else:
            doc = _decode(args, out)
    except MemoryError:
        doc = {"error": "memory", "message": "decoding needed more memory than allowed"}
    except Exception as e:  # cv2.error on a failed allocation or a corrupt stream
        text = str(e)
        low = text.lower()
        kind = "memory" if any(w in low for w in ("alloc", "memory", "failed to map")) else "decode"
        doc = {"error": kind, "message": f"{type(e).__name__}: {text[:300]}"}
    doc["peak_rss"] = _peak_rss()
    usage = resource.getrusage(resource.RUSAGE_SELF)  # since the fork, for a forked child
    doc["cpu_s"] = usage.ru_utime + usage.ru_stime
    _send(out, b"X" if "error" in doc else b"E", doc)
    return 0


def _zygote() -> int:
    """``--zygote``: load OpenCV and NumPy once, then fork one child per video.

    Started by :class:`liveness.decoders.Decoders` with one end of a Unix socket pair as
    stdin. Each request on it carries two file descriptors (the child's stdin and stdout
    pipes); the zygote forks, answers with the child's pid (``<i``), and the child runs
    :func:`_one_video` on those pipes exactly as a fresh decoder process would: it sets its
    limits before it reads its arguments, and its CPU time starts at zero with the fork.
    The zygote itself never reads a video, so every child starts from the same state
    whatever the files before were; a fork costs a few milliseconds of CPU against
    0.25-0.3 s for a fresh interpreter loading OpenCV. Children are reaped by the kernel
    (``SIGCHLD`` ignored); the parent follows each through a pidfd. The zygote ends when
    the parent closes its end of the socket.
    """
    import os
    import signal
    import socket

    import cv2  # noqa: F401
    import numpy  # noqa: F401

    ctl = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(ctl, 16, 2)
        except OSError:
            return 0
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            return 0  # the parent closed the socket (or sent nonsense): stop
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                ctl.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.dup2(fds[0], 0)
                os.dup2(fds[1], 1)
                for fd in fds:
                    os.close(fd)
                code = _one_video()
                sys.stdout.flush()
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        try:
            ctl.sendall(struct.pack("<i", pid))
        except OSError:
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
