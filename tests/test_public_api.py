"""The public API: what ``import liveness`` offers, typed errors, and stored formats that a
later release can still read."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from pathlib import Path

import numpy as np
import pytest

import liveness
from liveness import (
    FormatVersionError,
    InputError,
    LivenessError,
    Outcome,
    Reason,
    ReasonCode,
    Reference,
    Severity,
    VerificationResult,
)
from liveness.result import LivenessEvidence, MatchEvidence, ModelUse

# Changing this list changes the public API: add names on purpose, never drop one silently.
PUBLIC = {
    "AppearanceThresholds",
    "Detector",
    "Embedder",
    "Landmarker",
    "LandmarkPlan",
    "PadEnsemble",
    "PartSpec",
    "MESSAGES",
    "Action",
    "ChallengeClaims",
    "ChallengeGate",
    "FormatVersionError",
    "ImageDecodeError",
    "InputError",
    "IssuedChallenge",
    "Job",
    "JobError",
    "JobResult",
    "KeyConfigError",
    "KeyMissingError",
    "Keyring",
    "LivenessError",
    "LivenessEvidence",
    "MatchCalibration",
    "MatchEvidence",
    "MemorySessionStore",
    "ModelChecksumError",
    "ModelNotFoundError",
    "ModelUse",
    "Outcome",
    "Policy",
    "QualityThresholds",
    "RateLimit",
    "RateLimitedError",
    "Reason",
    "ReasonCode",
    "Reference",
    "ReferenceUnusableError",
    "Runtime",
    "SQLiteSessionStore",
    "SessionAlreadyUsedError",
    "SessionError",
    "SessionExpiredError",
    "SessionStore",
    "SetupError",
    "Severity",
    "TokenInvalidError",
    "VerificationResult",
    "Verifier",
    "VerifierConfig",
    "VerifierSpec",
    "VideoDecodeError",
    "VideoLimitError",
    "VideoLimits",
    "VideoReusedError",
    "begin_verification",
    "choose_providers",
    "issue_challenge",
    "load_video",
    "map_jobs",
    "release_verification",
    "verify_many",
    "video_digest",
}


def test_all_is_exactly_the_public_api_and_every_name_resolves():
    assert set(liveness.__all__) == PUBLIC
    assert len(liveness.__all__) == len(PUBLIC), "a name is listed twice"
    for name in liveness.__all__:
        assert getattr(liveness, name) is not None, name


def _library_modules():
    """Every module of the package, subpackages (``sessions``, ``stores``) included."""
    for info in pkgutil.walk_packages(liveness.__path__, prefix="liveness."):
        if info.name.endswith(".__main__"):  # runs the CLI
            continue
        yield importlib.import_module(info.name)


def test_every_exception_class_in_the_library_is_a_liveness_error():
    found = []
    for mod in _library_modules():
        for name, obj in vars(mod).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == mod.__name__
            ):
                found.append(obj)
                assert issubclass(obj, LivenessError), f"{mod.__name__}.{name}"
    assert len(found) >= 15  # errors.py, sessions/errors.py, stores/, formats.py, verify.py
    for name in liveness.__all__:
        obj = getattr(liveness, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert issubclass(obj, LivenessError), name


def test_sessions_bad_arguments_stay_value_errors_and_become_typed():
    from liveness.sessions import draw_actions

    with pytest.raises(InputError, match="unknown action"):
        draw_actions(2, exclude=["juggle"])
    with pytest.raises(ValueError):  # what callers caught before still works
        draw_actions(0)
    assert issubclass(liveness.KeyConfigError, ValueError)
    assert issubclass(liveness.SessionError, LivenessError)


def test_the_package_is_marked_typed():
    assert (Path(liveness.__file__).parent / "py.typed").is_file()
    text = (Path(liveness.__file__).parents[1] / "pyproject.toml").read_text()
    assert '"py.typed"' in text


def test_decisions_and_severities_are_str_enums_that_compare_as_strings():
    assert Outcome("accept") is Outcome.ACCEPT and Outcome.ACCEPT == "accept"
    assert f"{Outcome.REVIEW}" == "review" and str(Severity.REJECT) == "reject"
    assert json.dumps({"d": Outcome.REJECT}) == '{"d": "reject"}'
    r = Reason.of(ReasonCode.MATCH_UNCERTAIN, "review")
    assert r.severity is Severity.REVIEW and r.severity == "review"
    with pytest.raises(ValueError):
        Reason.of(ReasonCode.NO_FACE, "maybe")


def _result() -> VerificationResult:
    return VerificationResult(
        decision="review",
        score=0.4,
        reasons=[Reason.of(ReasonCode.LIVENESS_UNCERTAIN, "review", detail="no blink")],
        match=MatchEvidence(0.5, 1e-5, 0.3, [1.0, 2.0]),
        liveness=LivenessEvidence(0.6, 0.6, [{"t": 1.0, "live": 0.6}], {"blinks": 0}),
        quality={"face_fraction": 1.0},
        video={"duration_s": 3.0},
        timings_ms={"total": 10.0},
        models={"yunet": ModelUse("yunet", "ab", "CPUExecutionProvider", "MIT")},
        reference={"usable": True},
    )


def test_audit_record_carries_a_version_and_reads_back():
    r = _result()
    assert r.decision is Outcome.REVIEW and r.decision == "review"
    d = json.loads(r.to_json())
    assert d["format_version"] == "1.0" and d["decision"] == "review"
    back = VerificationResult.from_dict(d)
    assert back.to_dict() == r.to_dict()
    assert back.reasons[0].severity is Severity.REVIEW


def test_an_old_audit_record_without_a_version_still_loads_and_newer_fields_are_ignored():
    d = _result().to_dict()
    del d["format_version"]
    d["match"]["added_later"] = 1  # a newer minor version's field
    d["reasons"].append({"code": "SOME_FUTURE_CODE", "message": "m", "severity": "review"})
    back = VerificationResult.from_dict(d)
    assert back.decision == "review" and back.match.similarity == 0.5
    assert back.reason_codes == ["LIVENESS_UNCERTAIN", "SOME_FUTURE_CODE"]


@pytest.mark.parametrize("version", ["2.0", "17.3"])
def test_a_future_major_version_is_refused_with_a_typed_error(version):
    d = _result().to_dict() | {"format_version": version}
    with pytest.raises(FormatVersionError, match="newer release"):
        VerificationResult.from_dict(d)
    ref = _reference().to_dict() | {"format_version": version}
    with pytest.raises(FormatVersionError, match="newer release"):
        Reference.from_dict(ref)
    assert issubclass(FormatVersionError, InputError)


def test_a_garbled_version_is_refused():
    with pytest.raises(FormatVersionError):
        Reference.from_dict(_reference().to_dict() | {"format_version": "one"})


def _reference() -> Reference:
    return Reference(np.ones(4, np.float32) / 2, "w600k_mbf", "ab", None, [], 1)


def test_reference_template_carries_a_version_and_an_old_one_still_loads():
    ref = _reference()
    d = ref.to_dict()
    assert d["format_version"] == "1.0"
    old = {k: v for k, v in d.items() if k != "format_version"}  # as 0.1.0 wrote it
    for stored in (d, old, json.loads(json.dumps(old))):
        back = Reference.from_dict(stored)
        assert np.array_equal(back.embedding, ref.embedding) and back.model == "w600k_mbf"
    back = Reference.from_dict(d | {"format_version": "1.7"})  # a newer minor version
    assert back.usable
