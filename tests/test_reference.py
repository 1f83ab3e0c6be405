"""Reference photos: weak is used and recorded, unusable goes to review (liveness.reference),
on the real models and a real clip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from media import frame_at

import liveness
from liveness.reference import Reference

WDA = "videos/talking_head_wda_1.mp4"


@pytest.fixture(scope="module")
def photo(data_dir):
    return frame_at(data_dir / WDA, 7.5)


def test_dim_blurred_reference_is_weak_but_used(verifier, data_dir, photo):
    dim = cv2.GaussianBlur((photo.astype(np.float32) * 0.18).astype(np.uint8), (0, 0), 2.0)
    ref = verifier.enroll(dim)
    assert ref.usable and ref.weak and "too dark" in ref.weaknesses, ref.to_dict()
    assert ref.quality.brightness < verifier.config.quality.min_brightness
    r = verifier.verify(data_dir / WDA, ref)
    assert "REFERENCE_UNUSABLE" not in r.reason_codes
    assert r.reference["weaknesses"] == ref.weaknesses
    assert r.match.fmr_estimate <= verifier.config.policy.accept_fmr, r.match


def test_unusable_reference_goes_to_review_with_an_operator_reason(verifier, data_dir):
    couple = data_dir / "faces/deepface/couple.jpg"
    r = verifier.verify(data_dir / WDA, couple)
    assert r.decision == "review" and r.reason_codes == ["REFERENCE_UNUSABLE"]
    assert "more than one face" in r.reasons[0].detail
    blank = np.full((400, 400, 3), 90, np.uint8)
    ref = verifier.enroll(blank)
    assert not ref.usable and ref.problems == ["no face found"]
    with pytest.raises(liveness.ReferenceUnusableError):
        verifier.enroll(blank, require_usable=True)


def test_old_templates_with_quality_problems_read_as_weak(verifier, photo):
    d = verifier.enroll(photo).to_dict()
    d["problems"] = ["too dark", "blurred"]
    d.pop("weaknesses", None)
    ref = Reference.from_dict(d)
    assert ref.usable and ref.weaknesses == ["too dark", "blurred"]
    d["problems"] = ["more than one face"]
    assert not Reference.from_dict(d).usable
    assert liveness.Reference is Reference and liveness.verify.Reference is Reference
