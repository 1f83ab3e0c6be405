"""Biometric metrics for the benchmark scripts: pure numpy, no I/O.

Conventions used by every function here
---------------------------------------
Face verification (``roc``, ``eer``, ``tar_at_far``, ``kfold_accuracy``)
    A *similarity* score: higher means more likely the same person (genuine).
    A pair is **accepted** when ``score >= threshold`` (a score equal to the
    threshold is accepted).  So at threshold ``t``::

        FAR(t) = #{impostor >= t} / #impostor     (false accept rate)
        TAR(t) = #{genuine  >= t} / #genuine      (true accept rate)
        FRR(t) = 1 - TAR(t) = #{genuine < t} / #genuine

Presentation attack detection, ISO/IEC 30107-3 (``apcer``, ``bpcer``, ``acer``,
``bpcer_at_apcer``, ``pad_eer``, ``pad_curve``)
    A *live* (bona fide) score: higher means more likely a live person.  A
    presentation is **classified as an attack when** ``live_score < threshold``
    and as bona fide when ``live_score >= threshold`` (a score equal to the
    threshold is bona fide).  So at threshold ``t``::

        APCER_k(t) = #{attack of kind k >= t} / #attack of kind k
        BPCER(t)   = #{live < t} / #live

    Following ISO/IEC 30107-3 the APCER is reported per attack kind (PAI
    species) and the system-level figure is the *worst* kind:
    ``max_k APCER_k``.  Kinds are never pooled.

Rates are plain Python ``float``; a rate that cannot be estimated (empty
denominator, or a target rate smaller than one sample can resolve) is
``nan``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "roc",
    "eer",
    "tar_at_far",
    "kfold_accuracy",
    "apcer",
    "bpcer",
    "acer",
    "pad_curve",
    "bpcer_at_apcer",
    "pad_eer",
    "confusion",
]

# Slack when turning a target rate into a whole number of samples, so that
# e.g. 0.29 * 100 = 28.999999999999996 still allows 29 errors.
_COUNT_EPS = 1e-9


def _scores(values: Any, name: str, *, allow_empty: bool = False) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr


def _count_at_or_above(sorted_scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Number of ``sorted_scores`` that are ``>= t`` for each ``t`` in ``thresholds``."""
    return sorted_scores.size - np.searchsorted(sorted_scores, thresholds, side="left")


def _max_errors(rate: float, n: int) -> int | None:
    """Largest error count ``k`` with ``k / n <= rate``; ``None`` if ``rate < 1/n``.

    A target below one sample in ``n`` cannot be shown to hold from ``n``
    samples (zero observed errors only bounds the rate by ~3/n), so it is
    reported as not estimable instead of silently using a zero-error threshold.
    """
    if not np.isfinite(rate) or rate < 0:
        raise ValueError(f"target rate must be a finite number >= 0, got {rate!r}")
    k = int(np.floor(rate * n + _COUNT_EPS))
    return None if k < 1 else min(k, n)


def _candidate_thresholds(*arrays: np.ndarray) -> np.ndarray:
    """Distinct observed scores in decreasing order, preceded by ``+inf`` (accept nothing)."""
    uniq = np.unique(np.concatenate(arrays))[::-1]
    return np.concatenate(([np.inf], uniq))


def _crossing(fa: np.ndarray, fr: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """Equal-error point of two curves sampled at decreasing ``thresholds``.

    ``fa`` (false accepts) must be non-decreasing and ``fr`` (false rejects)
    non-increasing along the arrays, with ``fa[0] - fr[0] < 0 <= fa[-1] - fr[-1]``.
    Returns the rate and threshold where ``fa == fr`` by linear interpolation
    between the two neighbouring points (see ``eer``).
    """
    d = fa - fr
    k = int(np.argmax(d >= 0))  # first index with fa >= fr
    if d[k] == 0 or k == 0:
        return float(fa[k]), float(thresholds[k])
    # fa - fr goes from negative at k-1 to positive at k: interpolate linearly.
    alpha = -d[k - 1] / (d[k] - d[k - 1])
    rate = fa[k - 1] + alpha * (fa[k] - fa[k - 1])
    t0, t1 = thresholds[k - 1], thresholds[k]
    thr = t1 if not np.isfinite(t0) else t0 + alpha * (t1 - t0)
    return float(rate), float(thr)


# --------------------------------------------------------------------------
# Face verification
# --------------------------------------------------------------------------


def roc(genuine_scores, impostor_scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Receiver operating characteristic of a verification score.

    Parameters
    ----------
    genuine_scores : array_like of float
        Similarity scores of same-identity (mated) pairs. Higher = more similar.
    impostor_scores : array_like of float
        Similarity scores of different-identity (non-mated) pairs.

    Returns
    -------
    far : ndarray of float, shape (M,)
        False accept rate ``#{impostor >= t} / #impostor`` at each threshold;
        non-decreasing, starts at 0 and ends at 1.
    tar : ndarray of float, shape (M,)
        True accept rate ``#{genuine >= t} / #genuine``; non-decreasing, starts
        at 0 and ends at 1. The false reject rate is ``frr = 1 - tar``.
    thresholds : ndarray of float, shape (M,)
        Decreasing: ``+inf`` (accept nothing) followed by every distinct score
        observed in either list. A pair is accepted when ``score >= t``.

    Raises
    ------
    ValueError
        If either list is empty or contains NaN.

    Examples
    --------
    >>> far, tar, thr = roc([0.9, 0.6], [0.2, 0.6])
    >>> thr.tolist(), far.tolist(), tar.tolist()
    ([inf, 0.9, 0.6, 0.2], [0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0])
    """
    gen = np.sort(_scores(genuine_scores, "genuine_scores"))
    imp = np.sort(_scores(impostor_scores, "impostor_scores"))
    thresholds = _candidate_thresholds(gen, imp)
    far = _count_at_or_above(imp, thresholds) / imp.size
    tar = _count_at_or_above(gen, thresholds) / gen.size
    return far, tar, thresholds


def eer(genuine, impostor) -> tuple[float, float]:
    """Equal error rate of a verification score, where FAR equals FRR.

    The ROC of :func:`roc` is walked from the highest threshold down. FAR
    rises and FRR falls; at the first ROC point where ``FAR >= FRR`` the curves
    have crossed. If they are equal there, that point is returned. Otherwise
    ``FAR - FRR`` is interpolated linearly between this point and the previous
    one, and the EER is the (common) value of FAR and FRR at its zero; the
    threshold is interpolated with the same weight (when the previous point is
    the ``+inf`` start, the crossing point's threshold is returned instead).

    Parameters
    ----------
    genuine, impostor : array_like of float
        Similarity scores of genuine and impostor pairs, higher = more similar.

    Returns
    -------
    eer : float
        Equal error rate in [0, 1].
    threshold : float
        Threshold (accept when ``score >= threshold``) at the equal error point.

    Examples
    --------
    Accepting at ``t = 0.6`` lets one impostor in (0.65) and rejects one
    genuine (0.4), 1/4 each:

    >>> eer([0.4, 0.6, 0.7, 0.9], [0.1, 0.3, 0.5, 0.65])
    (0.25, 0.6)
    """
    far, tar, thresholds = roc(genuine, impostor)
    return _crossing(far, 1.0 - tar, thresholds)


def tar_at_far(genuine, impostor, far: float, *, return_threshold: bool = False):
    """True accept rate at a fixed false accept rate.

    The operating threshold is the **lowest** threshold ``t`` (among
    ``+inf`` and the observed scores, see :func:`roc`) whose empirical
    ``FAR(t) = #{impostor >= t} / #impostor`` is ``<= far``; i.e. the most
    permissive threshold that still meets the FAR target, which is the
    threshold giving the largest TAR with ``FAR <= far``. The result is
    ``TAR(t) = #{genuine >= t} / #genuine``. No interpolation.

    Parameters
    ----------
    genuine, impostor : array_like of float
        Similarity scores of genuine and impostor pairs, higher = more similar.
    far : float
        Target false accept rate, e.g. ``1e-3``.
    return_threshold : bool, optional
        Also return the threshold.

    Returns
    -------
    tar : float
        TAR at the chosen threshold, or ``nan`` when ``far < 1 / len(impostor)``
        (fewer impostor pairs than needed to observe even one false accept at
        that rate, so the FAR target cannot be estimated; ``far = 0`` is
        therefore always ``nan``).
    threshold : float
        Only with ``return_threshold=True``; ``nan`` together with ``tar``.

    Examples
    --------
    Five impostors: FAR 0.2 allows one false accept (0.9), so the threshold
    may go down to the next observed score, 0.85, but not to 0.8 (a second
    false accept). Genuine 0.95 and 0.85 are accepted:

    >>> tar_at_far([0.95, 0.85, 0.7, 0.5], [0.9, 0.8, 0.3, 0.2, 0.1], 0.2,
    ...            return_threshold=True)
    (0.5, 0.85)
    """
    gen = _scores(genuine, "genuine")
    imp = _scores(impostor, "impostor")
    k = _max_errors(far, imp.size)
    if k is None:
        return (float("nan"), float("nan")) if return_threshold else float("nan")
    far_curve, tar_curve, thresholds = roc(gen, imp)
    # far_curve is non-decreasing; take the last (lowest threshold) point allowed.
    i = int(np.searchsorted(far_curve * imp.size, k + 0.5, side="left")) - 1
    tar = float(tar_curve[i])
    return (tar, float(thresholds[i])) if return_threshold else tar


def _best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """Accuracy-maximising threshold on one training set (see ``kfold_accuracy``)."""
    uniq = np.unique(scores)
    cands = np.concatenate(([-np.inf], (uniq[:-1] + uniq[1:]) / 2.0, [np.inf]))
    gen = np.sort(scores[same])
    imp = np.sort(scores[~same])
    correct = _count_at_or_above(gen, cands) + (imp.size - _count_at_or_above(imp, cands))
    best = np.flatnonzero(correct == correct.max())
    return float(cands[best[-1]])  # ties: the highest (most conservative) threshold


def kfold_accuracy(scores, same, folds: int = 10) -> tuple[float, float, list[float], list[float]]:
    """Verification accuracy by k-fold cross-validation, LFW View 2 protocol.

    The pairs are split, **in the order given** (no shuffling), into
    ``k = min(folds, n_pairs)`` consecutive folds of sizes differing by at
    most one (the first ``n_pairs % k`` folds are one larger, as
    ``numpy.array_split``). LFW's ``pairs.txt`` lists its 6000 pairs as 10
    consecutive sets of 600, so passing them in file order reproduces View 2.

    For each fold, the threshold is chosen using **only the other k-1 folds**:
    the candidates are the midpoints between consecutive distinct training
    scores plus ``-inf`` (accept all) and ``+inf`` (accept none); the one with
    the highest training accuracy wins, ties going to the highest threshold.
    That threshold (accept when ``score >= threshold``) is then applied to
    the held-out fold and its accuracy recorded.

    Parameters
    ----------
    scores : array_like of float, shape (n_pairs,)
        Similarity score of each pair, higher = more similar.
    same : array_like of bool, shape (n_pairs,)
        True for same-identity pairs.
    folds : int, optional
        Number of folds (10 for LFW).

    Returns
    -------
    mean : float
        Mean of the per-fold accuracies.
    std : float
        Population standard deviation (``ddof=0``) of the per-fold accuracies,
        as reported by most LFW evaluation code.
    per_fold : list of float
        Accuracy on each held-out fold, in fold order.
    thresholds : list of float
        Threshold used for each fold (may be ``±inf``).

    Raises
    ------
    ValueError
        If the lengths differ, or fewer than 2 folds can be formed.
    """
    s = _scores(scores, "scores")
    y = np.asarray(same, dtype=bool).ravel()
    if y.shape != s.shape:
        raise ValueError(f"scores and same differ in length ({s.size} vs {y.size})")
    k = min(int(folds), s.size)
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    fold_idx = np.array_split(np.arange(s.size), k)
    per_fold: list[float] = []
    thresholds: list[float] = []
    for test in fold_idx:
        train = np.ones(s.size, dtype=bool)
        train[test] = False
        thr = _best_threshold(s[train], y[train])
        acc = float(np.mean((s[test] >= thr) == y[test]))
        per_fold.append(acc)
        thresholds.append(thr)
    arr = np.asarray(per_fold)
    return float(arr.mean()), float(arr.std()), per_fold, thresholds


# --------------------------------------------------------------------------
# Presentation attack detection (ISO/IEC 30107-3)
# --------------------------------------------------------------------------


def _attacks(attack_scores_by_kind: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not attack_scores_by_kind:
        raise ValueError("attack_scores_by_kind has no attack kinds")
    return {
        str(kind): np.sort(_scores(v, f"attack scores of kind {kind!r}"))
        for kind, v in attack_scores_by_kind.items()
    }


def apcer(attack_scores_by_kind: Mapping[str, Any], threshold: float) -> tuple[dict, float]:
    """Attack presentation classification error rate, per attack kind.

    Parameters
    ----------
    attack_scores_by_kind : mapping of str to array_like of float
        Live scores (higher = more live) of attack presentations, grouped by
        attack kind (PAI species, e.g. ``"print"``, ``"replay"``, ``"mask"``).
    threshold : float
        Presentations with ``live_score >= threshold`` are classified bona
        fide; those with ``live_score < threshold`` are classified attacks.

    Returns
    -------
    per_kind : dict of str to float
        ``#{attack of kind >= threshold} / #attack of kind``: the share of
        each kind wrongly accepted as live.
    max_apcer : float
        ``max(per_kind.values())``, the ISO/IEC 30107-3 worst-case APCER.

    Raises
    ------
    ValueError
        If there are no kinds, or a kind has no scores.

    Examples
    --------
    >>> apcer({"print": [0.1, 0.6], "replay": [0.2, 0.3, 0.5, 0.9]}, 0.5)
    ({'print': 0.5, 'replay': 0.5}, 0.5)
    """
    attacks = _attacks(attack_scores_by_kind)
    per_kind = {
        kind: float(_count_at_or_above(a, np.asarray([threshold]))[0] / a.size)
        for kind, a in attacks.items()
    }
    return per_kind, max(per_kind.values())


def bpcer(live_scores, threshold: float) -> float:
    """Bona fide presentation classification error rate.

    Parameters
    ----------
    live_scores : array_like of float
        Live scores (higher = more live) of bona fide presentations.
    threshold : float
        A presentation is classified as an attack when ``live_score < threshold``.

    Returns
    -------
    float
        ``#{live < threshold} / #live``, the share of real users rejected.

    Examples
    --------
    >>> bpcer([0.4, 0.5, 0.8, 0.9], 0.5)
    0.25
    """
    live = _scores(live_scores, "live_scores")
    return float(np.count_nonzero(live < threshold) / live.size)


def acer(live_scores, attack_scores_by_kind: Mapping[str, Any], threshold: float) -> float:
    """Average classification error rate ``(max_k APCER_k + BPCER) / 2``.

    Uses the worst-case attack kind, as the ISO/IEC 30107-3 (2017) definition.
    (The 2023 revision of the standard discourages ACER in favour of
    reporting APCER and BPCER separately; it is kept for comparison with the
    literature.) Conventions as :func:`apcer` and :func:`bpcer`.

    Returns
    -------
    float
        The ACER in [0, 1].
    """
    _, worst = apcer(attack_scores_by_kind, threshold)
    return (worst + bpcer(live_scores, threshold)) / 2.0


def pad_curve(
    live_scores, attack_scores_by_kind: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Worst-case APCER and BPCER over all thresholds (the DET curve).

    Parameters
    ----------
    live_scores : array_like of float
        Live scores of bona fide presentations, higher = more live.
    attack_scores_by_kind : mapping of str to array_like of float
        Live scores of attack presentations, by attack kind.

    Returns
    -------
    max_apcer : ndarray of float, shape (M,)
        ``max_k APCER_k(t)``; non-decreasing, from 0 to 1.
    bpcer : ndarray of float, shape (M,)
        ``BPCER(t)``; non-increasing, from 1 to 0.
    thresholds : ndarray of float, shape (M,)
        Decreasing: ``+inf`` followed by every distinct observed score.
    """
    live = np.sort(_scores(live_scores, "live_scores"))
    attacks = _attacks(attack_scores_by_kind)
    thresholds = _candidate_thresholds(live, *attacks.values())
    per_kind = [_count_at_or_above(a, thresholds) / a.size for a in attacks.values()]
    max_apcer = np.max(np.vstack(per_kind), axis=0)
    bpcer_curve = 1.0 - _count_at_or_above(live, thresholds) / live.size
    return max_apcer, bpcer_curve, thresholds


def bpcer_at_apcer(
    live_scores,
    attack_scores_by_kind: Mapping[str, Any],
    target: float,
    *,
    return_threshold: bool = False,
):
    """BPCER at the threshold where the worst-case APCER meets a target.

    The threshold is the **lowest** one (among ``+inf`` and the observed
    scores) at which **every** attack kind has ``APCER_k <= target``; the
    result is the BPCER there. E.g. ``target=0.05`` gives ISO/IEC 30107-3's
    "BPCER20", ``target=0.01`` "BPCER100". No interpolation.

    Parameters
    ----------
    live_scores : array_like of float
        Live scores of bona fide presentations, higher = more live.
    attack_scores_by_kind : mapping of str to array_like of float
        Live scores of attack presentations, by attack kind.
    target : float
        Maximum APCER allowed for each kind.
    return_threshold : bool, optional
        Also return the threshold.

    Returns
    -------
    bpcer : float
        ``#{live < t} / #live`` at that threshold; ``nan`` when some kind
        has fewer than ``1 / target`` samples (``target < 1 / n_kind``), since
        that kind cannot show an APCER that low.
    threshold : float
        Only with ``return_threshold=True``; ``nan`` together with ``bpcer``.

    Examples
    --------
    Allowing APCER 0.5 per kind: ``print`` may let 1 of 2 through (0.6),
    ``replay`` 2 of 4 (0.9 and 0.5) but not 0.3, so the binding kind is
    ``replay`` and the lowest threshold is the next observed score above
    0.3, i.e. 0.5. The live score 0.25 is then rejected:

    >>> bpcer_at_apcer([0.25, 0.5, 0.8, 0.9], {"print": [0.1, 0.6],
    ...                "replay": [0.2, 0.3, 0.5, 0.9]}, 0.5, return_threshold=True)
    (0.25, 0.5)
    """
    attacks = _attacks(attack_scores_by_kind)
    nan = float("nan")
    if any(_max_errors(target, a.size) is None for a in attacks.values()):
        return (nan, nan) if return_threshold else nan
    max_apcer, bpcer_curve, thresholds = pad_curve(live_scores, attacks)
    # max_apcer is non-decreasing along thresholds; last point with max_apcer <= target.
    ok = np.flatnonzero(max_apcer <= target + _COUNT_EPS)
    i = int(ok[-1])
    value = float(bpcer_curve[i])
    return (value, float(thresholds[i])) if return_threshold else value


def pad_eer(live_scores, attack_scores_by_kind: Mapping[str, Any]) -> tuple[float, float]:
    """Equal error rate of a PAD score: where worst-case APCER equals BPCER.

    Same interpolation as :func:`eer`, on the curves of :func:`pad_curve`
    (``max_k APCER_k`` plays the role of FAR, BPCER the role of FRR).

    Returns
    -------
    eer : float
        Rate where ``max_k APCER_k == BPCER``.
    threshold : float
        Live-score threshold there (attack when ``live_score < threshold``).
    """
    max_apcer, bpcer_curve, thresholds = pad_curve(live_scores, attack_scores_by_kind)
    return _crossing(max_apcer, bpcer_curve, thresholds)


# --------------------------------------------------------------------------
# End-to-end decisions
# --------------------------------------------------------------------------


def confusion(decisions: Iterable[Any], labels: Iterable[Any], *, positive: Any = True) -> dict:
    """Confusion table of end-to-end decisions against ground truth.

    Parameters
    ----------
    decisions : iterable
        What the system decided for each sample, e.g. ``True``/``False`` or
        ``"accept"``/``"reject"``/``"retry"``. Any decision other than
        ``positive`` counts as *not accepted*.
    labels : iterable
        Ground truth for each sample, the same kind of values; a label equal
        to ``positive`` means the sample should be accepted (genuine and live).
    positive : optional
        The value meaning "accept" in both lists (``True`` by default).

    Returns
    -------
    dict
        ``table``: ``{str(label): {str(decision): count}}`` with every
        observed value; ``tp``, ``fp``, ``tn``, ``fn``: counts with
        ``positive`` as the positive class; ``n``; ``accuracy``
        ``(tp + tn) / n``; ``far`` ``fp / (fp + tn)`` (negatives accepted);
        ``frr`` ``fn / (tp + fn)`` (positives not accepted). Rates are
        ``nan`` when their denominator is 0.

    Examples
    --------
    >>> c = confusion([True, False, True, False], [True, True, False, False])
    >>> c["tp"], c["fn"], c["fp"], c["tn"], c["far"], c["frr"]
    (1, 1, 1, 1, 0.5, 0.5)
    """
    dec = list(decisions)
    lab = list(labels)
    if len(dec) != len(lab):
        raise ValueError(f"decisions and labels differ in length ({len(dec)} vs {len(lab)})")
    table: dict[str, dict[str, int]] = {}
    tp = fp = tn = fn = 0
    for d, y in zip(dec, lab, strict=True):
        row = table.setdefault(str(y), {})
        row[str(d)] = row.get(str(d), 0) + 1
        accepted, should = d == positive, y == positive
        if should:
            tp, fn = (tp + 1, fn) if accepted else (tp, fn + 1)
        else:
            fp, tn = (fp + 1, tn) if accepted else (fp, tn + 1)

    def rate(num: int, den: int) -> float:
        return num / den if den else float("nan")

    n = len(dec)
    return {
        "table": table,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "n": n,
        "accuracy": rate(tp + tn, n),
        "far": rate(fp, fp + tn),
        "frr": rate(fn, tp + fn),
    }
