"""Video reuse judged on content: a fingerprint of the decoded frames, not of the file bytes.

A changed trailing byte, a re-encode, a trim or bytes appended to the file make a new
SHA-256 but leave the pictures as they were. :func:`content_fingerprint` keeps, for frames
about every ``every_s`` seconds, a 64-bit perceptual hash (:func:`frame_hash`: the signs of
the lowest 8x8 DCT coefficients of the 32x32 grey frame against their median, the DC term
left out) and the frame's time. :func:`match` says how much of one recording is found in
another *in step*: frames whose hashes differ by at most ``max_distance`` bits, at one
consistent time offset (a trimmed copy keeps its offset; an unrelated clip only matches by
chance, frame by frame, at scattered offsets).

:class:`FingerprintIndex` remembers fingerprints in a session store (memory, SQLite,
PostgreSQL or Redis: :mod:`liveness.stores.fingerprints`, so instances sharing a store share
them) and answers "seen before?" with :meth:`FingerprintIndex.check_and_add`.

Thresholds (measured with ``python -m benchmarks.fingerprint``, benchmarks/README.md section
"Video reuse", 55 shared clips): re-encoded copies 55/55 found, trimmed 34/36, byte-changed
55/55; 0 of 1,485 pairs of different recordings matched (LipNet clips of one studio matched
at 1.0 by appearance alone, hence the movement check in :func:`match`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np


def _small(image: np.ndarray) -> np.ndarray:
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)


def _hash(small: np.ndarray) -> int:
    coeffs = cv2.dct(small)[:8, :8].ravel()[1:]  # 63 coefficients, DC left out
    bits = coeffs > np.median(coeffs)
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The 32x32 grey picture (float32) a frame's hash and blocks are made from: a
    fingerprint of ``(t, thumbnail)`` pairs equals that of the frames themselves, so it can
    be computed while frames are decoded without keeping them."""
    return _small(image)


def frame_hash(image: np.ndarray) -> int:
    """64-bit perceptual hash of one BGR or grey frame (see the module docstring)."""
    return _hash(_small(image))


@dataclass(frozen=True)
class Fingerprint:
    """Frame hashes and their times (seconds from the recording's first analysed frame)."""

    times: tuple[float, ...]
    hashes: tuple[int, ...]
    # the 8x8 grey picture (block means, 0-255) per kept frame: its changes from one kept
    # frame to the next are the recording's movements
    blocks: tuple[tuple[float, ...], ...] = ()

    def __len__(self) -> int:
        return len(self.hashes)

    def summary(self) -> str:
        """The frame hashes alone, 16 hex digits each: what every reuse check reads of every
        kept recording (:func:`near_share` bounds :func:`match` from it), a few hundred
        bytes against the few KB of :meth:`to_json`."""
        return "".join(f"{h:016x}" for h in self.hashes)

    def to_json(self, session: str | None = None) -> str:
        """The fingerprint as JSON; with ``session``, the session it was submitted for."""
        d: dict = {
            "t": [round(t, 3) for t in self.times],
            "h": list(self.hashes),
            "b": [[round(v, 1) for v in b] for b in self.blocks],
        }
        if session is not None:
            d["session"] = session
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, d: dict) -> Fingerprint:
        """:meth:`from_json` of the parsed JSON."""
        return cls(
            tuple(float(t) for t in d["t"]),
            tuple(int(h) for h in d["h"]),
            tuple(tuple(float(v) for v in b) for b in d.get("b", ())),
        )


def content_fingerprint(frames: Iterable, every_s: float = 0.2) -> Fingerprint:
    """The fingerprint of ``frames``: :class:`~liveness.video.Frame` s or ``(t, image)``
    pairs in time order, one kept about every ``every_s`` seconds."""
    times: list[float] = []
    hashes: list[int] = []
    blocks: list[tuple[float, ...]] = []
    next_t = -np.inf
    for f in frames:
        t, image = (f.t, f.image) if hasattr(f, "image") else (float(f[0]), f[1])
        if t + 1e-6 < next_t:
            continue
        small = _small(image)
        times.append(float(t))
        hashes.append(_hash(small))
        eight = cv2.resize(small, (8, 8), interpolation=cv2.INTER_AREA)
        blocks.append(tuple(float(v) for v in eight.ravel()))
        next_t = t + every_s
    return Fingerprint(tuple(times), tuple(hashes), tuple(blocks))


def _popcount(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    out = np.zeros(x.shape, np.int64)
    for shift in range(0, 64, 8):
        out += _BYTE_BITS[((x >> np.uint64(shift)) & np.uint64(0xFF)).astype(np.int64)]
    return out


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], np.int64)


def near_share(probe: Fingerprint, summary: str, max_distance: int = 8) -> float:
    """The share of ``probe`` 's frames with a hash within ``max_distance`` bits of one of
    the hashes in ``summary`` (:meth:`Fingerprint.summary`): an upper bound of
    :func:`match` ``(probe, stored, max_distance=max_distance)`` for the recording it
    summarises, since every frame :func:`match` counts has such a hash. 1.0 for a summary
    that is not hex (unknown: not ruled out)."""
    return float(near_shares(probe, [summary], max_distance)[0])


def _summary_hashes(summary: str) -> np.ndarray | None:
    """The hashes of a summary; None when it is empty or not 16-digit hex."""
    if not summary or len(summary) % 16:
        return None
    try:
        return np.frombuffer(bytes.fromhex(summary), dtype=">u8").astype(np.uint64)
    except ValueError:
        return None


def near_shares(
    probe: Fingerprint, summaries: Sequence[str], max_distance: int = 8, chunk: int = 8192
) -> np.ndarray:
    """:func:`near_share` of ``probe`` against every summary at once (float array): the
    summaries' hashes side by side, compared in groups of whole summaries of about ``chunk``
    hashes (memory: about ``len(probe) x chunk`` 8-byte words, 20 MB for a 60 s upload's
    300 frames), then an OR per summary. What a reuse check runs over every kept recording,
    so it stays a few numpy passes per group however many are kept."""
    out = np.ones(len(summaries))
    if not len(probe):
        return np.zeros(len(summaries))
    parsed = [(i, h) for i, s in enumerate(summaries) if (h := _summary_hashes(s)) is not None]
    if not parsed:
        return out
    every = np.concatenate([h for _, h in parsed])
    ends = np.cumsum([len(h) for _, h in parsed])
    starts = ends - [len(h) for _, h in parsed]
    a = np.array(probe.hashes, np.uint64)[:, None]
    shares = np.empty(len(parsed))
    i = 0
    while i < len(parsed):
        # whole summaries i..j-1, about `chunk` hashes (at least one summary)
        j = max(i + 1, int(np.searchsorted(ends, starts[i] + chunk, side="right")))
        near = _bit_count(a ^ every[None, starts[i] : ends[j - 1]]) <= max_distance
        shares[i:j] = np.logical_or.reduceat(near, starts[i:j] - starts[i], axis=1).sum(0)
        i = j
    out[[i for i, _ in parsed]] = shares / len(a)
    return out


def _bit_count(x: np.ndarray) -> np.ndarray:
    """Set bits per element (numpy's own popcount where there is one)."""
    count = getattr(np, "bitwise_count", None)
    return count(x) if count is not None else _popcount(x)


def match(
    probe: Fingerprint,
    stored: Fingerprint,
    *,
    max_distance: int = 8,
    offset_tolerance_s: float = 0.1,
    min_motion_correlation: float = 0.5,
    min_motion_std: float = 0.2,
) -> float:
    """The share of ``probe`` 's frames found in ``stored`` at one time offset, counted only
    when the two also *move* alike there.

    Every pair of frames within ``max_distance`` bits votes for its time offset; the offset
    with most votes (frames within ``offset_tolerance_s`` of it) wins, each probe frame
    counted once. Two recordings of one still person in one place look alike frame by frame
    (the LipNet clips of one studio: overlap up to 1.0), so the matched frames' motion
    (picture change since the previous kept frame) must also correlate at
    ``min_motion_correlation`` or more: a copy repeats the recording's own movements, a new
    recording makes new ones. Returns 0 when it does not, and also when the matched frames
    hardly move (motion standard deviation under ``min_motion_std`` grey levels: two LipNet
    clips of one still speaker, 0.1-0.15, correlated at 0.5 by chance): a copy of a still
    recording is then not recognised by its content (its bytes still are, and a face that
    does not move fails the liveness motion check).
    """
    if not len(probe) or not len(stored):
        return 0.0
    a = np.array(probe.hashes, np.uint64)
    b = np.array(stored.hashes, np.uint64)
    dist = _popcount(a[:, None] ^ b[None, :])
    pi, si = np.nonzero(dist <= max_distance)
    if not len(pi):
        return 0.0
    pt, st = np.array(probe.times), np.array(stored.times)
    offsets = pt[pi] - st[si]
    # How many probe frames each offset matches. A still scene matches at many offsets
    # by appearance alone; the movements then pick the offset (and whether it is a copy).
    counts = {}
    for off in np.unique(np.round(offsets, 2)):
        near = np.abs(offsets - off) <= offset_tolerance_s
        counts[float(off)] = (len(np.unique(pi[near])), near)
    top = max(n for n, _ in counts.values())
    if not probe.blocks or not stored.blocks:
        return top / len(probe)
    pb, sb = np.array(probe.blocks), np.array(stored.blocks)
    best = 0
    for off, (n, near) in counts.items():
        if n <= best or n < 0.5 * top:
            continue
        if _moves_alike(pb, sb, pt, st, pi[near], si[near], off, min_motion_std) >= (
            min_motion_correlation
        ):
            best = n
    return best / len(probe)


def _moves_alike(pb, sb, pt, st, pi, si, off, min_std) -> float:
    """Correlation of the block changes of matched frames (each probe frame with the stored
    frame nearest in time at offset ``off``); -1 when too few or too still to tell."""
    pairs: dict[int, tuple[int, float]] = {}
    for i, j in zip(pi, si, strict=True):
        if i == 0 or j == 0:
            continue  # no movement before the first kept frame
        err = abs(pt[i] - st[j] - off)
        if i not in pairs or err < pairs[i][1]:
            pairs[int(i)] = (int(j), err)
    if len(pairs) < 5:
        return -1.0
    pm = np.concatenate([pb[i] - pb[i - 1] for i in pairs])
    sm = np.concatenate([sb[j] - sb[j - 1] for j, _ in pairs.values()])
    if pm.std() < min_std or sm.std() < min_std:
        return -1.0
    return float(np.corrcoef(pm, sm)[0, 1])


@dataclass(eq=False)
class FingerprintIndex:
    """Fingerprints of recordings already submitted, kept in a session store.

    ``store``: any :class:`~liveness.stores.SessionStore` backend (memory, SQLite,
    PostgreSQL, Redis); service instances that share a store share the set of seen
    recordings, so a copy uploaded to another instance is refused too. Without one,
    ``path`` names a SQLite file (a :class:`~liveness.stores.SQLiteSessionStore` on it), and
    with neither the fingerprints stay in this process's memory (tests, one process).

    :meth:`check_and_add` is :func:`liveness.stores.fingerprints.remember_unless_seen`:
    written once over the store's atomic primitives, so of copies checked at the same
    moment on any number of instances at most one is kept. ``retention`` seconds after
    which a fingerprint no longer counts (the store's purge drops it after its digest
    retention); the store keeps at most its ``max_fingerprints``, newest first. Work per
    check grows with the number kept: every kept summary is read and compared with
    :func:`near_shares` (measured with ``python -m benchmarks.fingerprint_store``: 10,000
    kept, 50-320 ms a check depending on the store), only candidates in full.
    """

    path: str | os.PathLike | None = None
    min_overlap: float = 0.6
    max_distance: int = 8
    retention: float = 30 * 24 * 3600.0
    store: object | None = None

    def __post_init__(self) -> None:
        if self.store is None:
            from .stores import MemorySessionStore, SQLiteSessionStore

            self.store = (
                MemorySessionStore() if self.path is None else SQLiteSessionStore(self.path)
            )

    def fingerprint(self, frames: Iterable) -> Fingerprint:
        """:func:`content_fingerprint` of ``frames`` (what :class:`ChallengeGate` calls)."""
        return content_fingerprint(frames)

    def _maybe_same(self, fp: Fingerprint) -> Callable[[list[str]], Sequence[bool]]:
        """Which kept summaries leave :meth:`_same` possible (:func:`near_shares`)."""
        return lambda summaries: near_shares(fp, summaries, self.max_distance) >= self.min_overlap

    def _same(self, fp: Fingerprint, session: str | None = None) -> Callable[[str], bool]:
        """Whether a kept fingerprint's text holds at least ``min_overlap`` of ``fp``; one
        kept for ``session`` itself never does (its resumed first try, same bytes)."""

        def same(text: str) -> bool:
            try:
                d = json.loads(text)
                if session is not None and d.get("session") == session:
                    return False
                old = Fingerprint.from_dict(d)
            except (ValueError, KeyError, TypeError, AttributeError):
                return False  # not written by this code: cannot be the same recording
            return match(fp, old, max_distance=self.max_distance) >= self.min_overlap

        return same

    def find(self, fp: Fingerprint, now: float) -> float:
        """The best overlap of ``fp`` with a kept fingerprint (0 when none)."""
        best = 0.0
        ids = [i for i, _ in self.store.fingerprints_since(now - self.retention)]
        for text in self.store.fingerprint_texts(ids).values():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                old = Fingerprint.from_json(text)
                best = max(best, match(fp, old, max_distance=self.max_distance))
        return best

    def check_and_add(self, fp: Fingerprint, now: float, session: str | None = None) -> bool:
        """Remember ``fp`` (as submitted for ``session``, when given); False (and nothing
        added) if a kept recording holds at least ``min_overlap`` of it, other than one kept
        for the same ``session``: a session resumed by the same video
        (:func:`liveness.sessions.begin_verification`) is not refused for its first try."""
        if not len(fp):
            return True
        from .stores.fingerprints import remember_unless_seen

        return remember_unless_seen(
            self.store,
            fp.summary(),
            fp.to_json(session=session),
            now,
            maybe_same=self._maybe_same(fp),
            same=self._same(fp, session),
            retention=self.retention,
        )
