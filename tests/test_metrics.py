"""Benchmark metrics and CLI plumbing on small score lists with answers worked out by hand."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common, metrics  # noqa: E402

# ---------------------------------------------------------------------------
# ROC / EER / TAR@FAR (verification: higher = genuine, accept when score >= t)
# ---------------------------------------------------------------------------


def test_roc_points_and_tie_counts_as_accept():
    # thresholds: inf, 0.9, 0.6, 0.2
    # t=0.9: genuine>=0.9 -> 1/2, impostor>=0.9 -> 0/2
    # t=0.6: genuine 0.9, 0.6 -> 2/2; impostor 0.6 (tie, accepted) -> 1/2
    # t=0.2: everything accepted
    far, tar, thr = metrics.roc([0.9, 0.6], [0.2, 0.6])
    assert thr.tolist() == [math.inf, 0.9, 0.6, 0.2]
    assert far.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert tar.tolist() == [0.0, 0.5, 1.0, 1.0]


def test_roc_rejects_empty_and_nan():
    with pytest.raises(ValueError):
        metrics.roc([], [0.1])
    with pytest.raises(ValueError):
        metrics.roc([0.1, float("nan")], [0.1])


def test_eer_exactly_quarter_on_roc_point():
    # genuine 0.4 0.6 0.7 0.9 | impostor 0.1 0.3 0.5 0.65
    # t=0.65: FAR=1/4 (0.65), FRR=2/4 (0.4, 0.6)
    # t=0.6 : FAR=1/4 (0.65), FRR=1/4 (0.4)      -> equal: EER 0.25 at 0.6
    rate, thr = metrics.eer([0.4, 0.6, 0.7, 0.9], [0.1, 0.3, 0.5, 0.65])
    assert rate == pytest.approx(0.25)
    assert thr == pytest.approx(0.6)


def test_eer_interpolates_between_roc_points():
    # genuine 0.5 0.9 | impostor 0.1 0.5 0.7
    # t=0.7: FAR=1/3, FRR=1/2 -> FAR-FRR = -1/6
    # t=0.5: FAR=2/3, FRR=0   -> FAR-FRR = +2/3
    # zero at alpha = (1/6)/(5/6) = 0.2:
    #   FAR = 1/3 + 0.2*(1/3) = 0.4, FRR = 1/2 - 0.2*(1/2) = 0.4
    #   threshold = 0.7 + 0.2*(0.5-0.7) = 0.66
    rate, thr = metrics.eer([0.5, 0.9], [0.1, 0.5, 0.7])
    assert rate == pytest.approx(0.4)
    assert thr == pytest.approx(0.66)


def test_eer_extremes():
    # perfectly separated: EER 0 at the lowest genuine score
    assert metrics.eer([0.8, 0.9], [0.1, 0.2]) == pytest.approx((0.0, 0.8))
    # perfectly inverted: EER 1
    assert metrics.eer([0.1], [0.9])[0] == pytest.approx(1.0)


GEN = [0.95, 0.85, 0.7, 0.5]
IMP = [0.9, 0.8, 0.3, 0.2, 0.1]


def test_tar_at_far_tiny_list():
    # 5 impostors; FAR <= 0.2 allows 1 false accept (0.9).
    # The lowest threshold with at most 1 impostor >= t is 0.85 (0.8 would admit 2).
    # Genuine >= 0.85: 0.95, 0.85 -> TAR 2/4.
    assert metrics.tar_at_far(GEN, IMP, 0.2, return_threshold=True) == (0.5, 0.85)
    # FAR <= 0.4 allows 2 (0.9, 0.8): threshold can go to 0.5 (next is 0.3) -> TAR 4/4
    assert metrics.tar_at_far(GEN, IMP, 0.4, return_threshold=True) == (1.0, 0.5)
    # FAR 1 accepts everything
    assert metrics.tar_at_far(GEN, IMP, 1.0) == 1.0


def test_tar_at_far_nan_when_too_few_impostors():
    # 0.1 < 1/5: not estimable from 5 impostors; 0 never is
    assert math.isnan(metrics.tar_at_far(GEN, IMP, 0.1))
    assert math.isnan(metrics.tar_at_far(GEN, IMP, 0.0))
    tar, thr = metrics.tar_at_far(GEN, IMP, 0.1, return_threshold=True)
    assert math.isnan(tar) and math.isnan(thr)


def test_tar_at_far_float_rounding_of_allowed_count():
    # 100 impostors 0.00..0.99; FAR 0.29 allows 29 (0.71..0.99).
    # 0.29*100 == 28.999999999999996 in floating point: flooring it naively would
    # allow only 28, forcing t above 0.71 and rejecting genuine 0.705.
    imp = np.arange(100) / 100
    assert metrics.tar_at_far([0.705, 0.715], imp, 0.29) == 1.0


# ---------------------------------------------------------------------------
# LFW k-fold accuracy
# ---------------------------------------------------------------------------


def _leak_case():
    # fold 0 = pairs 0,1: a hard genuine (0.45) and an easy impostor (0.2)
    # folds 1..9: one genuine (0.6..1.0) and one impostor (0.40..0.24) each
    gen = [0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0]
    imp = [0.40, 0.38, 0.36, 0.34, 0.32, 0.30, 0.28, 0.26, 0.24]
    scores, same = [0.45, 0.2], [True, False]
    for g, i in zip(gen, imp, strict=True):
        scores += [g, i]
        same += [True, False]
    return scores, same


def test_kfold_threshold_from_training_folds_only():
    scores, same = _leak_case()
    mean, std, per_fold, thresholds = metrics.kfold_accuracy(scores, same, folds=10)
    # Fold 0 held out: training imp <= 0.40 < 0.60 <= gen; the only threshold with 100 %
    # training accuracy is the midpoint 0.5, which rejects the held-out genuine 0.45:
    # accuracy 1/2. (Had the test fold leaked into training, 0.425 would be chosen and
    # fold 0 would score 2/2.)
    # Folds 1..9 held out: training contains 0.45 -> threshold midway between it and the
    # largest training impostor: fold 1 holds out 0.40 -> (0.38+0.45)/2 = 0.415, folds
    # 2..9 -> (0.40+0.45)/2 = 0.425; the held-out pair is classified correctly: 2/2.
    assert per_fold == [0.5] + [1.0] * 9
    assert thresholds[0] == pytest.approx(0.5)
    assert thresholds[1:] == pytest.approx([0.415] + [0.425] * 8)
    # mean = 9.5/10; std = sqrt((0.45^2 + 9*0.05^2)/10) = sqrt(0.0225) = 0.15
    assert mean == pytest.approx(0.95)
    assert std == pytest.approx(0.15)


def test_kfold_consecutive_uneven_folds_in_given_order():
    # 23 pairs in 10 folds: sizes 3,3,3,2,2,2,2,2,2,2 -> fold 3 = pairs 9,10.
    # Even pairs genuine, score 0.6 + 0.01k; odd pairs impostor, 0.4 - 0.01k; except
    # pair 9, made a genuine scored 0.0 that no sensible threshold accepts.
    # Training without fold 0 (pairs 0,1,2): max impostor 0.37 (pair 3), min genuine
    # 0.64 (pair 4) -> threshold (0.37+0.64)/2 = 0.505.
    # Every other training set holds pair 1 (0.39) and pair 0 (0.6) -> 0.495.
    # Only the fold holding pair 9 loses a pair: 1/2 (2/3 if folds were cut 3,3,3,3,...).
    n = 23
    same = [k % 2 == 0 for k in range(n)]
    scores = [0.6 + 0.01 * k if s else 0.4 - 0.01 * k for k, s in enumerate(same)]
    same[9], scores[9] = True, 0.0
    _, _, per_fold, thresholds = metrics.kfold_accuracy(scores, same, folds=10)
    assert per_fold == [1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert thresholds == pytest.approx([0.505] + [0.495] * 9)


def test_kfold_tie_between_thresholds_goes_to_highest():
    # 2 folds of 4. Fold 0: genuine 0.9, 0.3; impostor 0.7, 0.1.
    # As training for fold 1, thresholds 0.8 (accept 0.9) and 0.2 (accept 0.9, 0.7, 0.3)
    # both get 3/4 right; 0.5 gets 2/4. The tie goes to the highest, 0.8, which rejects
    # fold 1's genuine 0.5: fold 1 accuracy 1/2 (the lowest, 0.2, would give 2/2).
    # Fold 1 (genuine 0.5, impostor 0.05) as training: only (0.05+0.5)/2 = 0.275 is
    # perfect; on fold 0 it accepts 0.9, 0.7, 0.3: 3/4.
    scores = [0.9, 0.7, 0.3, 0.1, 0.5, 0.05, 0.5, 0.05]
    same = [True, False, True, False, True, False, True, False]
    _, _, per_fold, thresholds = metrics.kfold_accuracy(scores, same, folds=2)
    assert per_fold == [0.75, 0.5]
    assert thresholds == pytest.approx([0.275, 0.8])


def test_kfold_fewer_pairs_than_folds():
    # 4 pairs -> 4 folds of one pair each
    scores = [0.9, 0.1, 0.8, 0.2]
    same = [True, False, True, False]
    mean, std, per_fold, thresholds = metrics.kfold_accuracy(scores, same, folds=10)
    assert len(per_fold) == 4 and len(thresholds) == 4
    assert per_fold == [1.0, 1.0, 1.0, 1.0] and std == 0.0 and mean == 1.0
    with pytest.raises(ValueError):
        metrics.kfold_accuracy([0.5], [True])
    with pytest.raises(ValueError):
        metrics.kfold_accuracy([0.5, 0.6], [True])


# ---------------------------------------------------------------------------
# ISO/IEC 30107-3 PAD metrics (live score: attack when live_score < t)
# ---------------------------------------------------------------------------

LIVE = [0.4, 0.5, 0.6, 0.8, 0.9]
ATTACKS = {"print": [0.1, 0.2, 0.5, 0.7], "replay": [0.3, 0.5, 0.6, 0.9, 0.95]}


def test_apcer_bpcer_acer_at_threshold_with_ties():
    # t = 0.5; a score equal to t is classified bona fide.
    # print  >= 0.5: 0.5 (tie), 0.7       -> 2/4 = 0.5
    # replay >= 0.5: 0.5 (tie), 0.6, 0.9, 0.95 -> 4/5 = 0.8 (worst kind)
    # live    < 0.5: 0.4 (0.5 is a tie, accepted) -> 1/5 = 0.2
    # ACER = (0.8 + 0.2)/2 = 0.5
    per_kind, worst = metrics.apcer(ATTACKS, 0.5)
    assert per_kind == pytest.approx({"print": 0.5, "replay": 0.8})
    assert worst == pytest.approx(0.8)
    assert metrics.bpcer(LIVE, 0.5) == pytest.approx(0.2)
    assert metrics.acer(LIVE, ATTACKS, 0.5) == pytest.approx(0.5)


def test_pad_metrics_reject_empty():
    with pytest.raises(ValueError):
        metrics.apcer({}, 0.5)
    with pytest.raises(ValueError):
        metrics.apcer({"print": []}, 0.5)
    with pytest.raises(ValueError):
        metrics.bpcer([], 0.5)


def test_bpcer_at_apcer_uses_worst_kind_not_pooled():
    # target 0.5. print (4) may let 2 through: 0.9, 0.8 but not 0.7 -> t > 0.7.
    # replay (2) may let 1 through, never binding above 0.2.
    # Lowest observed score above 0.7 is live 0.75 -> t = 0.75; live < 0.75: 0.3 -> 1/3.
    # (Pooled, 6 attacks could let 3 through, so t could drop to 0.3 and BPCER be 0.)
    live = [0.3, 0.75, 0.95]
    attacks = {"print": [0.9, 0.8, 0.7, 0.1], "replay": [0.2, 0.2]}
    value, thr = metrics.bpcer_at_apcer(live, attacks, 0.5, return_threshold=True)
    assert value == pytest.approx(1 / 3)
    assert thr == pytest.approx(0.75)
    # replay has 2 samples: APCER 0.4 < 1/2 cannot be estimated
    assert math.isnan(metrics.bpcer_at_apcer(live, attacks, 0.4))


def test_pad_eer_single_and_worst_kind():
    live = [0.4, 0.6, 0.7, 0.9]
    # one kind, same numbers as the verification EER test: 0.25 at 0.6
    assert metrics.pad_eer(live, {"a": [0.1, 0.3, 0.5, 0.65]}) == pytest.approx((0.25, 0.6))
    # add kind b = [0.95, 0.0]: APCER_b = 0.5 for every t in (0, 0.95]
    # t=0.9: max APCER 0.5, BPCER 3/4; t=0.7: max APCER 0.5, BPCER 2/4 -> EER 0.5 at 0.7
    rate, thr = metrics.pad_eer(live, {"a": [0.1, 0.3, 0.5, 0.65], "b": [0.95, 0.0]})
    assert rate == pytest.approx(0.5)
    assert thr == pytest.approx(0.7)


def test_pad_curve_is_monotone():
    max_apcer, bpcer_curve, thr = metrics.pad_curve(LIVE, ATTACKS)
    assert np.all(np.diff(thr) < 0) and thr[0] == math.inf
    assert np.all(np.diff(max_apcer) >= 0) and max_apcer[0] == 0 and max_apcer[-1] == 1
    assert np.all(np.diff(bpcer_curve) <= 0) and bpcer_curve[0] == 1 and bpcer_curve[-1] == 0


# ---------------------------------------------------------------------------
# Confusion table
# ---------------------------------------------------------------------------


def test_confusion_three_way_decisions():
    # label accept:  decided accept, reject, retry -> tp=1, fn=2
    # label reject:  decided accept, reject, reject -> fp=1, tn=2
    dec = ["accept", "reject", "retry", "accept", "reject", "reject"]
    lab = ["accept", "accept", "accept", "reject", "reject", "reject"]
    c = metrics.confusion(dec, lab, positive="accept")
    assert (c["tp"], c["fn"], c["fp"], c["tn"], c["n"]) == (1, 2, 1, 2, 6)
    assert c["accuracy"] == pytest.approx(0.5)
    assert c["far"] == pytest.approx(1 / 3)
    assert c["frr"] == pytest.approx(2 / 3)
    assert c["table"] == {
        "accept": {"accept": 1, "reject": 1, "retry": 1},
        "reject": {"accept": 1, "reject": 2},
    }


def test_confusion_bool_and_empty_class():
    c = metrics.confusion(np.array([True, True]), np.array([True, True]))
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (2, 0, 0, 0)
    assert c["frr"] == 0.0 and math.isnan(c["far"])
    with pytest.raises(ValueError):
        metrics.confusion([True], [True, False])


# ---------------------------------------------------------------------------
# common: emit / parser / progress / plots
# ---------------------------------------------------------------------------


def test_emit_prints_one_json_object_last(capsys, tmp_path):
    print("some log line")
    result = {
        "f32": np.float32(0.5),
        "i64": np.int64(3),
        "nan": float("nan"),
        "arr": np.array([1.0, np.inf, np.nan]),
        "tup": (np.bool_(True), None),
        "path": Path("a/b"),
        "nested": {1: np.float64(-np.inf)},
    }
    out_file = tmp_path / "sub" / "r.json"
    common.emit(result, out_file)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "some log line"
    expected = {
        "f32": 0.5,
        "i64": 3,
        "nan": None,
        "arr": [1.0, None, None],
        "tup": [True, None],
        "path": "a/b",
        "nested": {"1": None},
    }
    assert json.loads(lines[-1]) == expected
    assert "NaN" not in lines[-1] and "Infinity" not in lines[-1]
    assert json.loads(out_file.read_text()) == expected


def test_to_jsonable_refuses_unknown_objects():
    with pytest.raises(TypeError):
        common.to_jsonable({"x": object()})


def test_parent_parser_options(tmp_path):
    import argparse

    p = argparse.ArgumentParser(parents=[common.parent_parser()])
    args = p.parse_args(
        ["--json", "r.json", "--plots", str(tmp_path), "--model-dir", "m", "--no-progress"]
    )
    assert args.json == Path("r.json") and args.plots == tmp_path
    assert args.model_dir == Path("m") and args.no_progress is True
    args = p.parse_args([])
    assert args.json is None and args.plots is None and args.model_dir is None
    assert args.no_progress is False


def test_progress_passes_items_through():
    assert list(common.progress(range(3), total=3, desc="x", enabled=False)) == [0, 1, 2]
    assert list(common.progress([1, 2], enabled=True)) == [1, 2]


def test_peak_rss_positive():
    assert common.peak_rss_mb() > 1.0


def test_plots_write_png(tmp_path):
    far, tar, _ = metrics.roc([0.9, 0.7, 0.6], [0.2, 0.65, 0.1])
    max_apcer, bpcer_curve, _ = metrics.pad_curve(LIVE, ATTACKS)
    paths = [
        common.plot_roc(far, tar, tmp_path / "roc.png"),
        common.plot_score_hist([0.9, 0.7], [0.2, 0.65], 0.66, tmp_path / "h" / "hist.png"),
        common.plot_det(max_apcer, bpcer_curve, tmp_path / "det.png"),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
