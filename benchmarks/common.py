"""Command-line plumbing shared by the benchmark scripts.

Every benchmark script builds its parser from :func:`parent_parser`, wraps its
loops in :func:`progress`, and ends with :func:`emit`, so that::

    python -m benchmarks.<name> ... --json result.json --plots plots/

prints human-readable progress on stderr and exactly one JSON object as the
last line of stdout (the machine-readable result), optionally also written to
``result.json``. Plots are written with matplotlib's non-interactive ``Agg``
backend, so no display is needed.

matplotlib, tqdm and psutil come with the ``bench`` extra; they are imported
lazily so that importing this module never needs them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

__all__ = [
    "parent_parser",
    "engine_parser",
    "verifier_spec",
    "run_jobs",
    "set_progress",
    "progress",
    "to_jsonable",
    "emit",
    "peak_rss_mb",
    "plot_roc",
    "plot_score_hist",
    "plot_det",
]

# Set from --no-progress by the scripts (see set_progress); None = decide by tty.
_PROGRESS_ENABLED: bool | None = None


def parent_parser() -> argparse.ArgumentParser:
    """Options common to every benchmark script, for ``ArgumentParser(parents=[...])``.

    Returns
    -------
    argparse.ArgumentParser
        A parser made with ``add_help=False`` that defines

        ``--json FILE``
            also write the JSON result to FILE (``args.json``, a Path or None);
        ``--plots DIR``
            write plots (PNG) into DIR, created if needed (``args.plots``);
        ``--model-dir DIR``
            look for model files in DIR first (``args.model_dir``; default None,
            i.e. ``LIVENESS_MODEL_DIR`` then the user cache, see
            :func:`liveness.models.search_dirs`);
        ``--no-progress``
            no progress bars (``args.no_progress``).

    Examples
    --------
    >>> import argparse
    >>> p = argparse.ArgumentParser(parents=[parent_parser()])
    >>> args = p.parse_args(["--json", "r.json", "--no-progress"])
    >>> str(args.json), args.plots, args.no_progress
    ('r.json', None, True)
    """
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common benchmark options")
    g.add_argument(
        "--json", metavar="FILE", type=Path, default=None, help="also write the JSON result to FILE"
    )
    g.add_argument(
        "--plots", metavar="DIR", type=Path, default=None, help="write plots (PNG) into DIR"
    )
    g.add_argument(
        "--model-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="directory searched first for model files "
        "(default: $LIVENESS_MODEL_DIR, then the user cache)",
    )
    g.add_argument("--no-progress", action="store_true", help="do not show progress bars on stderr")
    return p


def set_progress(enabled: bool | None) -> None:
    """Turn progress bars on/off for :func:`progress`; ``None`` = only on a tty.

    Scripts call ``set_progress(False if args.no_progress else None)``.
    """
    global _PROGRESS_ENABLED
    _PROGRESS_ENABLED = enabled


def progress(
    iterable: Iterable[T],
    total: int | None = None,
    desc: str | None = None,
    *,
    enabled: bool | None = None,
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm progress bar written to stderr.

    Parameters
    ----------
    iterable : iterable
        Items to iterate over; yielded unchanged.
    total : int, optional
        Number of items, when ``len(iterable)`` is not available.
    desc : str, optional
        Label in front of the bar.
    enabled : bool, optional
        Force the bar on or off. By default it follows :func:`set_progress`
        (``--no-progress``) and is otherwise shown only when stderr is a tty,
        so logs and CI output stay clean. Without tqdm installed there is no bar.

    Returns
    -------
    iterator
        Iterates over the same items.
    """
    if enabled is None:
        enabled = _PROGRESS_ENABLED
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return iter(iterable)
    try:
        from tqdm import tqdm
    except ImportError:  # the bench extra is not installed: no bar
        return iter(iterable)
    return iter(tqdm(iterable, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True))


def to_jsonable(obj: Any) -> Any:
    """Convert a result to plain JSON types.

    numpy scalars become Python numbers, numpy arrays and tuples become lists,
    ``Path`` becomes ``str``, mapping keys become ``str``, and non-finite
    floats (NaN, ±inf) become ``None`` (JSON ``null``), since strict JSON has
    no NaN.
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, bool) or obj is None or isinstance(obj, int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot convert {type(obj).__name__} to JSON")


def emit(result: Mapping[str, Any], json_path: str | os.PathLike | None = None) -> str:
    """Print the result as ONE JSON object on the last line of stdout.

    Parameters
    ----------
    result : mapping
        The benchmark result; converted with :func:`to_jsonable` (numpy types
        to Python, NaN/inf to ``null``).
    json_path : path, optional
        Also write the same JSON (indented) to this file; parent directories
        are created.

    Returns
    -------
    str
        The single-line JSON text that was printed.

    Notes
    -----
    Call it last: anything printed to stdout afterwards would break the
    "last line is the result" contract. Progress and logs go to stderr.
    """
    data = to_jsonable(result)
    line = json.dumps(data, allow_nan=False, sort_keys=False)
    if json_path is not None:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, allow_nan=False, indent=2) + "\n", encoding="utf-8")
    sys.stdout.flush()
    print(line, flush=True)
    return line


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Uses ``resource.getrusage`` (``ru_maxrss``: KiB on Linux, bytes on macOS)
    where available; on Windows psutil's ``peak_wset``; else psutil's current
    RSS (a lower bound of the peak). ``nan`` if nothing is available.
    """
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
    except (ImportError, OSError):
        pass
    try:
        import psutil

        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset", info.rss) / (1024.0 * 1024.0)
    except Exception:  # psutil missing or not permitted
        return float("nan")


# --------------------------------------------------------------------------
# Plots (matplotlib, Agg backend)
# --------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    _pyplot().close(fig)
    return out


def plot_roc(far, tar, path: str | os.PathLike, *, title: str = "ROC") -> Path:
    """Plot TAR against FAR (log x axis) to a PNG file.

    Parameters
    ----------
    far, tar : array_like of float
        As returned by :func:`benchmarks.metrics.roc`. Points with FAR = 0
        cannot be shown on the log axis and are dropped.
    path : path
        Output file; its parent directory is created.
    title : str, optional

    Returns
    -------
    Path
        The file written.
    """
    plt = _pyplot()
    far = np.asarray(far, dtype=float)
    tar = np.asarray(tar, dtype=float)
    keep = far > 0
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.step(far[keep], tar[keep], where="post")
    ax.set_xscale("log")
    ax.set_xlabel("False accept rate (FAR)")
    ax.set_ylabel("True accept rate (TAR)")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def plot_score_hist(
    genuine,
    impostor,
    threshold: float | None,
    path: str | os.PathLike,
    *,
    labels: tuple[str, str] = ("genuine", "impostor"),
    title: str = "Score distributions",
) -> Path:
    """Histogram of the two score populations, with the threshold as a line.

    Parameters
    ----------
    genuine, impostor : array_like of float
        Scores of the positive (genuine / live) and negative (impostor /
        attack) samples.
    threshold : float or None
        Decision threshold to mark; None or non-finite to omit.
    path : path
        Output PNG file.
    labels : (str, str), optional
        Legend names of the two populations, e.g. ``("live", "attack")``.
    title : str, optional

    Returns
    -------
    Path
        The file written.
    """
    plt = _pyplot()
    g = np.asarray(genuine, dtype=float).ravel()
    i = np.asarray(impostor, dtype=float).ravel()
    both = np.concatenate([g, i])
    both = both[np.isfinite(both)]
    bins = np.linspace(both.min(), both.max(), 41) if both.size and np.ptp(both) > 0 else 10
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.hist(g, bins=bins, alpha=0.6, density=True, label=f"{labels[0]} (n={g.size})")
    ax.hist(i, bins=bins, alpha=0.6, density=True, label=f"{labels[1]} (n={i.size})")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.legend()
    ax.set_title(title)
    return _save(fig, path)


def plot_det(
    apcer_curve, bpcer_curve, path: str | os.PathLike, *, title: str = "DET (PAD)"
) -> Path:
    """Detection error trade-off curve on normal-deviate axes.

    Both axes use the probit (inverse standard normal CDF) scale, as in
    ISO/IEC 19795-1 and 30107-3 DET plots; ticks are labelled in percent.
    Rates of exactly 0 or 1 lie at infinity on this scale and are clipped to
    [1e-4, 1 - 1e-4].

    Parameters
    ----------
    apcer_curve, bpcer_curve : array_like of float
        E.g. the worst-case APCER and BPCER from
        :func:`benchmarks.metrics.pad_curve` (or FAR and FRR for verification).
    path : path
        Output PNG file.
    title : str, optional

    Returns
    -------
    Path
        The file written.
    """
    from statistics import NormalDist

    plt = _pyplot()
    ppf = np.vectorize(NormalDist().inv_cdf, otypes=[float])
    lo = 1e-4

    def probit(x) -> np.ndarray:
        return ppf(np.clip(np.asarray(x, dtype=float), lo, 1 - lo))

    ticks = np.array([0.0001, 0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95, 0.99])
    ticklabels = [f"{100 * t:g}" for t in ticks]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(probit(apcer_curve), probit(bpcer_curve))
    ax.set_xticks(probit(ticks), ticklabels)
    ax.set_yticks(probit(ticks), ticklabels)
    ax.set_xlim(probit(lo), probit(0.99))
    ax.set_ylim(probit(lo), probit(0.99))
    ax.set_xlabel("APCER (%)")
    ax.set_ylabel("BPCER (%)")
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


# -- many jobs on several workers (--engine) ------------------------------------------------


def engine_parser() -> argparse.ArgumentParser:
    """``--engine serial|process|ray``, ``--workers N`` and ``--address HOST:PORT`` for the
    benchmarks that loop over many files (``lfw``, ``pad``, ``videos``); see
    :func:`liveness.batch.map_jobs`. Every engine gives the same figures; only the time
    differs."""
    from liveness.batch import ENGINES

    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("where the work runs")
    g.add_argument(
        "--engine",
        choices=ENGINES,
        default="serial",
        help="serial (one process), process (a local pool) or ray (a Ray cluster)",
    )
    g.add_argument(
        "--workers", type=int, default=None, help="processes or Ray actors (default: CPUs)"
    )
    g.add_argument(
        "--address",
        default=None,
        help="an existing Ray cluster (e.g. auto, or HEAD_IP:6379); default: a local one",
    )
    return p


def verifier_spec(args: argparse.Namespace, config=None):
    """The :class:`liveness.VerifierSpec` each worker builds its Verifier from."""
    from liveness import VerifierConfig, VerifierSpec

    model_dir = None if args.model_dir is None else str(args.model_dir)
    return VerifierSpec(model_dir, config=config or VerifierConfig())


def run_jobs(task, items: list, args: argparse.Namespace, desc: str, config=None) -> Iterator:
    """``task(verifier, item)`` for every item with ``args.engine`` (a :class:`JobResult` per
    item, in order; a failed item has ``.error``)."""
    from liveness.batch import map_jobs

    return map_jobs(
        task,
        items,
        verifier_spec(args, config),
        engine=args.engine,
        workers=args.workers,
        address=args.address,
        progress=False if args.no_progress else _PROGRESS_ENABLED,
        desc=desc,
    )

