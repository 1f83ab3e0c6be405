"""Video reuse judged on content: byte-changed, re-encoded and trimmed copies are refused."""

from __future__ import annotations

import secrets
import time

import cv2
import pytest

from liveness import Verifier
from liveness.fingerprint import (
    FingerprintIndex,
    content_fingerprint,
    match,
    near_share,
    near_shares,
)
from liveness.sessions import (
    ChallengeClaims,
    ChallengeGate,
    Keyring,
    MemorySessionStore,
    SessionAlreadyUsedError,
    VideoReusedError,
    encode_token,
)
from liveness.stores import StoreUnavailable
from liveness.video import LAB_VIDEO_FORMATS, VideoLimits, load_video

CLIP = "videos/talking_head_retalk_2.mp4"
OTHER = "videos/talking_head_retalk_1.mp4"
# two recordings of one speaker in one studio, with the same framing (GRID corpus)
SAME_STUDIO = (
    "videos-wild/rizkiarm__LipNet__bbaf2n.mpg",
    "videos-wild/rizkiarm__LipNet__lbax4n.mpg",
)


def reencode(src, dst, scale=0.75):
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS)
    w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) * scale) // 2 * 2
    h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) * scale) // 2 * 2
    out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    while True:
        ok, img = cap.read()
        if not ok:
            break
        out.write(cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA))
    out.release()
    cap.release()
    return dst


# Some shared clips are MPEG-PS, which uploads may not use; the test reads them as lab data.
LAB = VideoLimits(formats=LAB_VIDEO_FORMATS)


def fp(path, **kw):
    return content_fingerprint(load_video(path, sample_fps=15, limits=LAB).frames, **kw)


def test_copies_match_and_other_recordings_do_not(data_dir, tmp_path):
    original = fp(data_dir / CLIP)
    assert match(fp(reencode(data_dir / CLIP, tmp_path / "re.mp4")), original) >= 0.9
    frames = load_video(data_dir / CLIP, sample_fps=15).frames
    trimmed = content_fingerprint([(f.t - 1.0, f.image) for f in frames if 1.0 <= f.t <= 4.0])
    assert match(trimmed, original) >= 0.9
    assert match(fp(data_dir / OTHER), original) < 0.6
    a, b = (fp(data_dir / p) for p in SAME_STUDIO)
    assert max(match(a, b), match(b, a)) < 0.6


def test_index_in_a_file_survives_reopening(data_dir, tmp_path):
    db = tmp_path / "fp.db"
    original = fp(data_dir / CLIP)
    assert FingerprintIndex(db).check_and_add(original, time.time())
    again = FingerprintIndex(db)
    assert not again.check_and_add(fp(reencode(data_dir / CLIP, tmp_path / "re.mp4")), time.time())
    assert again.check_and_add(fp(data_dir / OTHER), time.time())
    # forgotten after the retention time
    later = time.time() + again.retention + 1
    assert again.check_and_add(original, later)


def test_the_summary_bounds_the_match_so_the_store_reads_only_candidates(data_dir):
    """near_share (from the hashes alone: what every check reads of every kept recording)
    is never below match, so skipping the recordings it rules out changes no answer."""
    names = [CLIP, OTHER, "videos/selfie_blinks.mp4"]
    fps = [fp(data_dir / n) for n in names]
    for p in fps:
        for s in fps:
            assert near_share(p, s.summary()) >= match(p, s) - 1e-9
    assert near_share(fps[0], fps[0].summary()) == 1.0
    assert near_share(fps[0], fps[1].summary()) < 0.6  # ruled out: its text is not fetched
    assert near_share(fps[0], "") == 1.0 and near_share(fps[0], "not hex!" * 2) == 1.0
    # All kept summaries at once, in chunks of any size: the same shares.
    summaries = [f.summary() for f in fps] + ["", "zz" * 8]
    one_by_one = [near_share(fps[1], s) for s in summaries]
    assert list(near_shares(fps[1], summaries)) == one_by_one
    assert list(near_shares(fps[1], summaries, chunk=7)) == one_by_one


def test_a_file_written_before_summaries_still_finds_its_copies(data_dir, tmp_path):
    """A SQLite file of the per-instance index (no summary column) is migrated: its rows
    have no summary, so they are always compared in full."""
    import sqlite3

    db = tmp_path / "old.sqlite3"
    original = fp(data_dir / CLIP)
    with sqlite3.connect(db) as c:
        c.execute(
            "CREATE TABLE video_fingerprints (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "seen_at REAL NOT NULL, fingerprint TEXT NOT NULL)"
        )
        c.execute(
            "INSERT INTO video_fingerprints (seen_at, fingerprint) VALUES (?, ?)",
            (time.time(), original.to_json()),
        )
    c.close()
    index = FingerprintIndex(db)
    assert not index.check_and_add(fp(reencode(data_dir / CLIP, tmp_path / "re.mp4")), time.time())
    assert index.check_and_add(fp(data_dir / OTHER), time.time())


@pytest.fixture(scope="module")
def gate():
    return ChallengeGate(Keyring.single(b"f" * 32), MemorySessionStore(), FingerprintIndex())


@pytest.fixture(scope="module")
def verifier(model_dir, gate):
    with Verifier(model_dir, challenges=gate) as v:
        yield v


def token(gate, account="acct"):
    iat = int(time.time())
    claims = ChallengeClaims(
        secrets.token_urlsafe(16),
        secrets.token_urlsafe(16),
        account,
        ("blink",),
        iat,
        iat + 120,
        gate.keyring.current,
    )
    gate.store.record_issued(claims)
    return encode_token(gate.keyring, claims)


def test_byte_changed_and_reencoded_repeat_uploads_are_refused_as_reused(
    verifier, gate, data_dir, tmp_path
):
    data = (data_dir / CLIP).read_bytes()
    ref = data_dir / "faces/deepface/img33.jpg"
    first = verifier.verify(data, ref, challenge=token(gate))
    assert "VIDEO_REUSED" not in first.reason_codes
    changed = data[:-1] + bytes([data[-1] ^ 0xFF])
    assert verifier.verify(changed, ref, challenge=token(gate)).reason_codes == ["VIDEO_REUSED"]
    appended = data + b"\0" * 100
    assert verifier.verify(appended, ref, challenge=token(gate)).reason_codes == ["VIDEO_REUSED"]
    re = reencode(data_dir / CLIP, tmp_path / "re.mp4")
    assert verifier.verify(re, ref, challenge=token(gate)).reason_codes == ["VIDEO_REUSED"]
    # the failures count against the account
    assert gate.store.failures("acct", 60, time.time()) >= 3


def test_gate_refuses_content_seen_before_without_models(data_dir):
    g = ChallengeGate(Keyring.single(b"g" * 32), MemorySessionStore(), FingerprintIndex())
    frames = load_video(data_dir / CLIP, sample_fps=15).frames
    g.begin(token(g), "a" * 64, content=frames)
    with pytest.raises(VideoReusedError):
        g.begin(token(g), "b" * 64, content=frames[5:])


def test_a_resumed_session_is_not_refused_for_its_own_first_try(data_dir):
    """A session released after a store failure is resumed by the same upload: its frames,
    kept by the first try, do not count as seen before. Another session with those frames
    is still refused, and so is a duplicate of the upload without a release."""
    g = ChallengeGate(Keyring.single(b"g" * 32), MemorySessionStore(), FingerprintIndex())
    frames = load_video(data_dir / CLIP, sample_fps=15).frames
    tok = token(g)
    first = g.begin(tok, "a" * 64, content=frames, attempt="try-1")
    with pytest.raises(SessionAlreadyUsedError):
        g.begin(tok, "a" * 64, content=frames, attempt="try-2")
    assert g.release(first.session_id, "try-1")
    assert g.begin(tok, "a" * 64, content=frames, attempt="try-3") == first
    with pytest.raises(VideoReusedError):
        g.begin(token(g), "b" * 64, content=frames[5:])


def test_a_store_failure_during_verify_costs_a_retry_not_the_session(
    verifier, gate, data_dir, monkeypatch
):
    """The store goes away once the verification has its result but before the failure it
    counts is recorded (another person's reference: reject or review): verify raises
    StoreUnavailable, as a service answers 503, and releases the session. The person's
    retry of the same upload is verified in full; further tries are refused."""
    data = (data_dir / OTHER).read_bytes()
    ref = data_dir / "faces/deepface/img33.jpg"
    tok = token(gate, account="resumed")  # not the account the tests above rate-limited
    real = gate.store.record_failure
    calls = []

    def record_failure_once_unavailable(account, now):
        calls.append(account)
        if len(calls) == 1:
            raise StoreUnavailable(detail="injected: the server restarted")
        return real(account, now)

    monkeypatch.setattr(gate.store, "record_failure", record_failure_once_unavailable)
    with pytest.raises(StoreUnavailable):
        verifier.verify(data, ref, challenge=tok)
    retried = verifier.verify(data, ref, challenge=tok)
    assert retried.decision in ("reject", "review") and len(calls) == 2
    session = {"SESSION_ALREADY_USED", "VIDEO_REUSED"}
    assert not session & set(retried.reason_codes), retried.reason_codes
    assert retried.liveness.challenge is not None  # the actions were checked
    assert verifier.verify(data, ref, challenge=tok).reason_codes == ["SESSION_ALREADY_USED"]
    # A duplicate once the result was given: refused, and when the store fails as that
    # refusal is counted, the call's release frees nothing (its consume never took effect).
    calls.clear()
    with pytest.raises(StoreUnavailable):
        verifier.verify(data, ref, challenge=tok)
    assert verifier.verify(data, ref, challenge=tok).reason_codes == ["SESSION_ALREADY_USED"]
