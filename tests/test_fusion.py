"""The fusion of attack evidence (liveness.fusion) and its fitting (benchmarks.attacks)."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.attacks import logistic
from liveness.fusion import FEATURES, FusionParams, features, fused_score


def test_without_parameters_the_score_is_the_pad_score():
    assert fused_score(None, 0.83, "3d", 1.2, 0.05) == 0.83
    assert FusionParams.load() is None  # none ships until it costs no real person


def test_weights_move_the_score_the_right_way(tmp_path):
    f = tmp_path / "fusion.json"
    weights = {"pad_logit": 1.0, "geometry_3d": 1.0, "screen": -2.0, "motion_log": 0.5}
    f.write_text(json.dumps({"bias": 0.0, "weights": weights, "screen_centre": 0.7}))
    p = FusionParams.load(f)
    base = fused_score(p, 0.8, "no_evidence", 0.7, 0.03)
    assert fused_score(p, 0.8, "3d", 0.7, 0.03) > base
    assert fused_score(p, 0.8, "no_evidence", 1.8, 0.03) < base  # moiré peaks
    assert fused_score(p, 0.3, "no_evidence", 0.7, 0.03) < base
    assert set(features(0.5, None, None, None)) == set(FEATURES)


def test_logistic_fit_separates_separable_data():
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(1, 0.3, (40, 2)), rng.normal(-1, 0.3, (40, 2))]
    y = np.r_[np.ones(40), np.zeros(40)]
    w = logistic(x, y)
    p = 1 / (1 + np.exp(-(w[0] + x @ w[1:])))
    assert np.all((p > 0.5) == (y > 0.5))
