"""Turn a learning-rate range-test curve into a suggestion with bounds and a confidence.

Pure numpy. Input: the LR ladder that was run and the RAW loss of every optimizer step (not smoothed; it may
stop early, end in NaN/inf, or be negative). Output: a :class:`Suggestion`.

The math, with ``x = log10(lr)`` and ``y`` the raw loss:

1. Trim: keep the finite prefix of ``y``; skip its first 5% of points; cut the blow-up tail, which starts
   past the minimum of a running median where the raw loss stays above the level it had before the descent
   plus ``5·noise``. A final 1e6 is thus ignored, the same as a sweep stopped one step earlier.
2. Zero-phase smoothing: a Hampel filter replaces loss spikes (over 4σ from a running median) by that
   median; then at every ``x_i`` a weighted linear fit (LOESS) over the ``k`` points nearest in ``x``
   (``k`` = 15% of the points), tricube weights. The fit's value is the smoothed loss ``s(x)``, its slope
   ``s'(x) = ds/dlog10(lr)``. The window is symmetric, so there is no EMA lag.
3. ``drop`` = the highest ``s`` before its minimum minus the minimum; the bottom band = the stretch around the
   minimum where ``s`` is within 5% of the drop of it.
4. Estimators: ``minimum`` = the log-midpoint of the bottom band (a noise-robust argmin); ``steepest`` =
   argmin ``s'`` before the minimum; ``valley`` = the log-midpoint of the longest contiguous stretch where
   ``s' <= -10% · |s'(steepest)|`` (contiguous, unlike fastai's longest subsequence); ``minimum_div10``.
5. ``suggested`` = :func:`combine_estimates`: 3/4 of the way (in ``x``) from the descent, mean(steepest,
   valley), to the minimum (median(steepest, valley, minimum/10) stands for the descent when steepest and
   valley disagree by more than a decade); clipped into ``[lr_low, lr_high]``.
6. ``lr_high`` = ``minimum · 10**0.3`` (twice the minimum), or where ``s`` leaves the bottom band on the right
   (it has climbed back by 5% of the drop) if that comes first; never below the steepest point.
   ``lr_low`` = the onset of the descent, where, going left from the steepest point, ``s'`` rises above
   ``-20% · |s'(steepest)|``; kept within ``[lr_high/100, suggested]``.

Calibration (``scripts/check_suggestions.py``, constant-LR training on digits and Friedman #1 with SGD,
Adam and RMSprop): the best constant LR lies within a few tenths of a decade of ``minimum`` and training
falls apart 0.3 to 1 decade above it; the steepest point is 0.5 to 1 decade too low. Hence a suggestion
near the minimum, with a margin below it, and ``lr_high`` a little past it. A sweep of a few hundred steps
cannot see instabilities that build up over longer training (Gaussian NLL trained by SGD breaks down below
the sweep's minimum): the study's search over ``lr_low .. lr_high`` is the remedy.

Everything is a location or a ratio of loss differences, so shifting or scaling the loss (``a·y + b``,
``a > 0``) never changes the answer. Flags (see :data:`FLAGS`) compare the drop with the residual noise
``σ = 1.4826·MAD(y - s)``.

Example:
    >>> import numpy as np
    >>> lrs = np.logspace(-7, 1, 200)
    >>> x = np.log10(lrs)
    >>> loss = 2.3 - 2.0 / (1 + np.exp(-(x + 3) / 0.35)) + 0.02 * np.exp(3 * (x + 0.7))
    >>> s = suggest(lrs, loss, diverged=True)
    >>> round(float(np.log10(s.estimates["steepest"])), 1)
    -3.0
    >>> s.lr_low < s.suggested_lr < s.lr_high
    True
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from lrtune.errors import UsageError

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

FLAGS: tuple[str, ...] = ("no_divergence", "flat_curve", "at_boundary", "noisy", "unstable")
"""Every flag a :class:`Suggestion` may carry (σ: the per-step noise, the robust sd of raw minus smoothed).

- ``no_divergence``: the sweep did not stop on divergence and the smoothed loss does not climb back after its
  minimum by more than :data:`RISE_FRACTION` of the drop: the minimum, hence ``lr_high``, may be
  underestimated; sweep to higher learning rates.
- ``flat_curve``: the loss drops by less than :data:`FLAT_SNR` σ over the sweep (typical of pretrained
  models): there is no clear descent to read a learning rate from.
- ``at_boundary``: the suggestion sits within the first or last :data:`BOUNDARY_FRACTION` of the usable
  points, or the steepest descent sits at the start (the descent began before the sweep): widen the sweep.
- ``noisy``: the drop is less than :data:`NOISY_SNR` σ: the estimators are unreliable; repeat the sweep
  (``repeats``) or use larger batches.
- ``unstable``: reseeded repeats disagree: their suggestions span more than
  :data:`UNSTABLE_SPREAD_DECADES` decades.
"""

# Smoothing and trimming.
SPAN_FRACTION = 0.15  # LOESS window, as a fraction of the finite points
MIN_SPAN_POINTS = 7  # smallest LOESS window
_EVEN_SPACING = 1e-9  # x counts as equally spaced when every gap is within this fraction of the mean gap
_BLOCK = 1 << 15  # numbers per block of the point-by-point fit (bounds its memory)
MEDIAN_FRACTION = 0.05  # running-median window (tail detection, spike filter), fraction of the points
SPIKE_NOISE = 4.0  # a spike: further than SPIKE_NOISE * noise from the running median
TRIM_START_FRACTION = 0.05  # points ignored at the start of the sweep
MIN_POINTS = 10  # fewest finite points accepted
TAIL_NOISE = 5.0  # the blow-up tail: above the level before the descent + TAIL_NOISE * noise
TAIL_RUN = 3  # ... for this many points in a row (or to the end)

# Estimators and bounds, as fractions of the steepest slope |s'(steepest)|.
VALLEY_SLOPE_FRACTION = 0.10  # a "descending" point for the valley
LOW_SLOPE_FRACTION = 0.20  # lr_low: the descent has reached this fraction of the best rate
BOTTOM_FRACTION = 0.05  # the bottom band: within this fraction of the drop above the lowest smoothed loss
HIGH_DECADES = 0.3  # lr_high = minimum * 10**HIGH_DECADES, or where the loss leaves the bottom band if lower
LOW_MAX_DECADES = 2.0  # lr_low >= lr_high / 10**LOW_MAX_DECADES

# Combination of the estimators (log10 space); see combine_estimates.
SUGGEST_POSITION = 0.75  # suggestion = descent + SUGGEST_POSITION * (minimum - descent)
DISAGREEMENT_DECADES = 1.0  # steepest and valley further apart: descent = median(steepest, valley, min/10)

# Flags and confidence.
BOUNDARY_FRACTION = 0.02  # "at the boundary": within this fraction of the usable points of an end
RISE_FRACTION = 0.10  # the loss climbs back by this fraction of the drop: the sweep found its minimum
FLAT_SNR = 2.0  # drop / noise below this: flat_curve
NOISY_SNR = 5.0  # drop / noise below this: noisy
UNSTABLE_SPREAD_DECADES = 0.5  # repeats' spread above this: unstable
HIGH_CONFIDENCE_SPREAD_DECADES = 0.25  # "high" confidence needs a spread at most this
LOW_CONFIDENCE_FLAGS = frozenset({"flat_curve", "at_boundary", "unstable"})

METHOD = (
    "3/4 of the way from descent = mean(steepest, valley) to minimum, in log10(lr), on a despiked zero-phase "
    "LOESS curve; bounds: onset of the descent .. 2 x minimum (at most where the loss rises again)"
)


@dataclass(frozen=True)
class Suggestion:
    """A learning-rate suggestion with the bounds of the useful region.

    Attributes:
        suggested_lr: The learning rate to start from.
        lr_low: Lower bound of the useful region (onset of the descent): a cyclic schedule's minimum.
        lr_high: Upper bound: twice the minimum of the smoothed curve, or where the loss starts rising again
            if that comes first.
        flags: Sorted subset of :data:`FLAGS`.
        method: Short description of the rule.
        estimates: Each estimator's LR (``steepest``, ``valley``, ``minimum``, ``minimum_div10``).
        confidence: ``"high"``, ``"medium"`` or ``"low"`` (see :func:`confidence_from`).
    """

    suggested_lr: float
    lr_low: float
    lr_high: float
    flags: tuple[str, ...]
    method: str
    estimates: dict[str, float]
    confidence: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (flags as a list)."""
        out = asdict(self)
        out["flags"] = list(self.flags)
        out["estimates"] = dict(self.estimates)
        return out


@dataclass(frozen=True, eq=False)
class Consensus:
    """The suggestion from several reseeded sweeps over one ladder.

    Attributes:
        suggestion: Suggestion from the median curve, with the spread's flag and confidence.
        median_losses: Elementwise median of the raw curves over the repeats still running at each step; it
            stops where fewer than half of the repeats remain (so it may be shorter than the ladder).
        per_repeat: Suggestion of every usable repeat (at least :data:`MIN_POINTS` finite points), in order.
        spread_decades: ``max - min`` of ``log10(suggested_lr)`` over the usable repeats; ``None`` when fewer
            than two repeats are usable.
        smoothed_losses: :func:`smooth` of the median curve (as long as ``median_losses``): the curve the
            suggestion was read from.
    """

    suggestion: Suggestion
    median_losses: FloatArray
    per_repeat: tuple[Suggestion, ...]
    spread_decades: float | None
    smoothed_losses: FloatArray

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the suggestion's keys, ``spread_decades``, ``median_losses``, ``smoothed_losses``,
        ``per_repeat``."""
        out = self.suggestion.to_dict()
        out["spread_decades"] = self.spread_decades
        out["median_losses"] = [float(v) for v in self.median_losses]
        out["smoothed_losses"] = [float(v) for v in self.smoothed_losses]
        out["per_repeat"] = [p.to_dict() for p in self.per_repeat]
        return out


# ---------------------------------------------------------------------------------------------------------
# Input handling


def _as_ladder(lrs: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(lrs, dtype=np.float64)
    if arr.ndim != 1:
        raise UsageError(f"lrs must be a 1-D sequence of learning rates, got shape {arr.shape}")
    bad = np.flatnonzero(~(np.isfinite(arr) & (arr > 0)))
    if len(bad):
        raise UsageError(f"lrs must be finite and positive, got lrs[{bad[0]}]={arr[bad[0]]}")
    if np.any(np.diff(arr) <= 0):
        raise UsageError("lrs must be strictly increasing; pass the ladder in the order it was run")
    return arr


def _finite_prefix(lrs: npt.ArrayLike, losses: npt.ArrayLike) -> tuple[FloatArray, FloatArray, int]:
    """Validated (log10 ladder, finite prefix of the losses, total length)."""
    ladder = _as_ladder(lrs)
    y = np.asarray(losses, dtype=np.float64)
    if y.ndim != 1 or len(y) != len(ladder):
        raise UsageError(
            f"losses must have one value per learning rate: len(lrs)={len(ladder)}, losses shape {y.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(y))
    n = int(bad[0]) if len(bad) else len(y)
    if n < MIN_POINTS:
        raise UsageError(
            f"the curve has {n} finite points before the first NaN/inf, at least {MIN_POINTS} are needed; "
            "run a longer sweep or start from a lower learning rate"
        )
    return np.log10(ladder[:n]), y[:n], len(y)


def _median(v: FloatArray) -> float:
    """``np.median`` of a finite 1-D array (the same value), without its general-purpose overhead."""
    n = len(v)
    part = np.partition(v, [(n - 1) // 2, n // 2])
    return float((part[(n - 1) // 2] + part[n // 2]) / 2)


def _mad_sigma(r: FloatArray) -> float:
    return 1.4826 * _median(np.abs(r - _median(r))) if len(r) else 0.0


def _trim_start(n: int) -> int:
    return min(int(np.ceil(TRIM_START_FRACTION * n)), n - 3)


def _median_half(n: int) -> int:
    """Half-width of the running median's window over n points (odd, :data:`MEDIAN_FRACTION` of them)."""
    return max(3, round(MEDIAN_FRACTION * n) | 1) // 2


def _running_median(y: FloatArray, longer: FloatArray | None = None) -> FloatArray:
    """Centred running median over :data:`MEDIAN_FRACTION` of the points (windows shrink at the ends).

    ``longer``: the running median of a curve that starts with ``y``; where the windows agree, its values
    are reused.
    """
    n = len(y)
    half = _median_half(n)
    if longer is not None and _median_half(len(longer)) == half:
        out = longer[:n].copy()
        edge = np.arange(max(0, n - half), n)  # the windows that now reach past the end
    else:
        out = np.empty(n)
        if n > 2 * half:  # full windows (odd: the median is the middle element) in the interior
            windows = np.lib.stride_tricks.sliding_window_view(y, 2 * half + 1)
            out[half : n - half] = np.partition(windows, half, axis=1)[:, half]
        edge = np.concatenate([np.arange(min(half, n)), np.arange(max(half, n - half), n)])
    # Shrunken windows at the ends: sort the rows with NaN padding (NaN sorts last), take the middle ones.
    padded = np.concatenate([np.full(half, np.nan), y, np.full(half, np.nan)])
    rows = np.sort(padded[edge[:, None] + np.arange(2 * half + 1)], axis=1)
    count = np.minimum(edge + half, n - 1) - np.maximum(edge - half, 0) + 1
    at = np.arange(len(edge))
    out[edge] = (rows[at, (count - 1) // 2] + rows[at, count // 2]) / 2
    return out


def _tail_start(y: FloatArray, rough: FloatArray, i0: int) -> int:
    """Index where the blow-up tail starts (``len(y)`` when there is none).

    Past the minimum of the running median ``rough``, the first point from which the raw loss stays (for
    :data:`TAIL_RUN` points, or to the end) above the highest level before that minimum plus ``TAIL_NOISE·σ``.
    """
    n = len(y)
    i_min = i0 + int(np.argmin(rough[i0:]))
    before = slice(i0, i_min + 1)
    cap = float(np.max(rough[before])) + TAIL_NOISE * _mad_sigma(y[before] - rough[before])
    # Points j > i_min with y[j : j + TAIL_RUN] all above the cap (a shorter run at the end counts too).
    below = np.concatenate([[0], np.cumsum(y[i_min + 1 :] <= cap)])
    j = np.arange(len(below) - 1)
    run_end = np.minimum(j + TAIL_RUN, len(j))
    hits = np.flatnonzero(below[run_end] == below[j])
    return max(i_min + 1 + int(hits[0]), min(n, MIN_POINTS)) if len(hits) else n


def _despike(y: FloatArray, rough: FloatArray) -> FloatArray:
    """Hampel filter: points further than ``SPIKE_NOISE·σ`` from the running median are replaced by it."""
    resid = y - rough
    sigma = _mad_sigma(resid)
    return np.where(np.abs(resid) > SPIKE_NOISE * sigma, rough, y) if sigma > 0 else y


# ---------------------------------------------------------------------------------------------------------
# Smoothing


def _window_starts(x: FloatArray, k: int) -> npt.NDArray[np.intp]:
    """Start of the window of the k points nearest to each x_i (x sorted).

    The window ``[a, a + k)`` of x_i starts at the first ``a`` where moving it right would not bring it
    closer: ``x[a + k] - x_i >= x_i - x[a]`` (else ``a = n - k``). That test only turns from false to true as
    ``a`` grows, so a search on ``x[a] + x[a + k] >= 2·x_i`` lands on it or next to it, and the exact test
    settles the last step.
    """
    n = len(x)
    a = np.searchsorted(x[: n - k] + x[k:], 2.0 * x)

    def closer_right(a: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
        b = np.clip(a, 0, max(n - k - 1, 0))
        return (a >= 0) & (a < n - k) & (x[np.minimum(b + k, n - 1)] - x < x - x[b])

    while (forward := closer_right(a)).any():
        a = a + forward
    while (back := (a > 0) & ~closer_right(a - 1)).any():
        a = a - back
    return a


def _local_linear(
    x: FloatArray, y: FloatArray, rows: npt.NDArray[np.intp], starts: npt.NDArray[np.intp], k: int
) -> tuple[FloatArray, FloatArray]:
    """Tricube-weighted linear fit at ``x[rows]`` over the windows ``[starts, starts + k)``: (values, slopes).

    In ``u = (x_j - x_i) / h`` the fit ``b0 + b1·u`` solves the 2×2 normal equations of the five weighted
    sums ``Σw, Σw·u, Σw·u², Σw·y, Σw·u·y``. Rows are done in blocks of about :data:`_BLOCK` numbers.
    """
    values = np.empty(len(rows))
    slopes = np.empty(len(rows))
    offsets = np.arange(k)
    step = max(1, _BLOCK // k)
    for b in range(0, len(rows), step):
        xr, a = x[rows[b : b + step]], starts[b : b + step]
        idx = a[:, None] + offsets
        d = x[idx] - xr[:, None]
        h = np.maximum(x[a + (k - 1)] - xr, xr - x[a]) * (1.0 + 1.0 / k)  # the farthest point of the window
        u = d / h[:, None]
        t = np.abs(u)
        t = 1.0 - t * t * t
        w = t * t * t
        wu = w * u
        yw = y[idx]
        s0, s1, s2 = w.sum(axis=1), wu.sum(axis=1), (wu * u).sum(axis=1)
        t0, t1 = (w * yw).sum(axis=1), (wu * yw).sum(axis=1)
        det = s0 * s2 - s1 * s1
        values[b : b + step] = (s2 * t0 - s1 * t1) / det
        slopes[b : b + step] = (s0 * t1 - s1 * t0) / (det * h)
    return values, slopes


def _loess(x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Zero-phase LOESS of y over x: (smoothed values, slopes dy/dx).

    A tricube-weighted linear fit at every point over its k nearest neighbours in x. On an equally spaced
    x (an exponential ladder) the interior windows are all the same symmetric stencil, so there the fit is
    two correlations with fixed kernels (``Σw·u = 0``); the ends, and unequal spacings, are fitted point by
    point. The two agree to within :data:`_EVEN_SPACING` of the loss range (about 1e-13 on a computed
    exponential ladder).
    """
    n = len(x)
    k = max(MIN_SPAN_POINTS, round(SPAN_FRACTION * n))
    k = min(k | 1, n)  # odd, so the interior window is symmetric
    half = k // 2
    gap = (x[-1] - x[0]) / (n - 1)
    if n - 2 * half > 2 and float(np.max(np.abs(np.diff(x) - gap))) <= _EVEN_SPACING * gap:
        # Equal gaps: the k nearest points are i - half .. i + half, clipped to the ends (exactly what
        # _window_starts finds, as the competing distances differ by a whole gap).
        u = np.arange(-half, half + 1) / (half * (1.0 + 1.0 / k))
        t = 1.0 - np.abs(u) ** 3
        w = t * t * t
        s = np.empty(n)
        slope = np.empty(n)
        s[half : n - half] = np.correlate(y, w, "valid") / w.sum()
        slope[half : n - half] = np.correlate(y, w * u, "valid") / (
            np.sum(w * u * u) * half * gap * (1.0 + 1.0 / k)
        )
        ends = np.concatenate([np.arange(half), np.arange(n - half, n)])
        s[ends], slope[ends] = _local_linear(x, y, ends, np.clip(ends - half, 0, n - k), k)
        return s, slope
    return _local_linear(x, y, np.arange(n), _window_starts(x, k), k)


@dataclass(frozen=True)
class _Curve:
    """A validated, trimmed and smoothed curve."""

    x: FloatArray  # log10(lr) over the finite prefix
    y: FloatArray  # raw losses over the finite prefix
    s: FloatArray  # smoothed loss over [0, n_fit)
    slope: FloatArray  # ds/dlog10(lr) over [0, n_fit)
    i0: int  # first usable point
    n_fit: int  # points before the blow-up tail
    total: int  # length of the input


def _prepare(lrs: npt.ArrayLike, losses: npt.ArrayLike) -> _Curve:
    x, y, total = _finite_prefix(lrs, losses)
    i0 = _trim_start(len(y))
    rough = _running_median(y)
    n_fit = _tail_start(y, rough, i0)
    fit = y[:n_fit]
    s, slope = _loess(x[:n_fit], _despike(fit, rough if n_fit == len(y) else _running_median(fit, rough)))
    return _Curve(x=x, y=y, s=s, slope=slope, i0=i0, n_fit=n_fit, total=total)


def _smoothed(c: _Curve) -> FloatArray:
    """The smoothed loss as long as the input: raw in the blow-up tail, NaN past the finite prefix."""
    out = np.full(c.total, np.nan)
    out[: c.n_fit] = c.s
    out[c.n_fit : len(c.y)] = c.y[c.n_fit :]
    return out


def smooth(lrs: npt.ArrayLike, losses: npt.ArrayLike) -> FloatArray:
    """Zero-phase smoothing of a raw range-test curve in log10(lr) space.

    Spikes are replaced by a running median, then a local linear regression (LOESS, tricube weights) runs
    over the nearest :data:`SPAN_FRACTION` of the points in ``log10(lr)``: symmetric, so no lag. The
    blow-up tail (see the module docstring) is left out of the fit and returned raw.

    Args:
        lrs: The LR ladder (positive, increasing; exponential or linear spacing).
        losses: Raw per-step losses, one per LR; only the finite prefix is used.

    Returns:
        Array as long as ``losses``: the smoothed loss over the finite prefix (raw in the blow-up tail), NaN
        after the first NaN/inf.

    Raises:
        UsageError: For unusable input.

    Example:
        >>> import numpy as np
        >>> lrs = np.logspace(-5, 0, 50)
        >>> out = smooth(lrs, np.linspace(3.0, 1.0, 50))
        >>> bool(np.allclose(out, np.linspace(3.0, 1.0, 50)))
        True
    """
    return _smoothed(_prepare(lrs, losses))


# ---------------------------------------------------------------------------------------------------------
# Estimators


def _parabolic_vertex(x: FloatArray, v: FloatArray, i: int, lo: int, hi: int) -> float:
    """Sub-grid location of the extremum of v at index i (a parabola through i-1, i, i+1 within [lo, hi])."""
    if i - 1 < lo or i + 1 > hi:
        return float(x[i])
    x0, x1, x2 = x[i - 1], x[i], x[i + 1]
    y0, y1, y2 = v[i - 1], v[i], v[i + 1]
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
    if a == 0:
        return float(x1)
    return float(min(max(-b / (2 * a), x0), x2))


def _crossing(x: FloatArray, v: FloatArray, i: int, j: int, level: float) -> float:
    """x where v crosses level between indices i and j (linear interpolation)."""
    if v[j] == v[i]:
        return float(x[i])
    t = float(min(max((level - v[i]) / (v[j] - v[i]), 0.0), 1.0))
    return float(x[i] + t * (x[j] - x[i]))


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Contiguous runs of True as (first, last) index pairs."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


def _run_around(mask: npt.NDArray[np.bool_], i: int, lo: int, hi: int) -> tuple[int, int]:
    """First and last index of the run of True in ``mask[lo:hi]`` that holds ``i`` (``mask[i]`` is True)."""
    left = np.flatnonzero(~mask[lo:i])
    right = np.flatnonzero(~mask[i + 1 : hi])
    return (lo + int(left[-1]) + 1 if len(left) else lo), (i + int(right[0]) if len(right) else hi - 1)


def combine_estimates(log_estimates: Mapping[str, float]) -> float:
    """Combine the estimators' log10 learning rates into the suggestion (log10), before clipping to bounds.

    ``descent`` = mean(steepest, valley), or, when they disagree by more than :data:`DISAGREEMENT_DECADES`
    (one of them was fooled by noise), the median of steepest, valley and minimum/10. The suggestion lies
    :data:`SUGGEST_POSITION` (3/4) of the way from ``descent`` to ``minimum``: the best constant learning
    rate usually lies near the minimum, and the step back keeps a margin below where training breaks down.

    Example:
        >>> est = {"steepest": -3.0, "valley": -3.0, "minimum": -1.0, "minimum_div10": -2.0}
        >>> combine_estimates(est)
        -1.5
    """
    steepest, valley = log_estimates["steepest"], log_estimates["valley"]
    if abs(steepest - valley) <= DISAGREEMENT_DECADES:
        descent = 0.5 * (steepest + valley)
    else:
        descent = sorted([steepest, valley, log_estimates["minimum_div10"]])[1]
    return descent + SUGGEST_POSITION * (log_estimates["minimum"] - descent)


def confidence_from(flags: Sequence[str], spread_decades: float | None = None) -> str:
    """``"low"`` with flat_curve/at_boundary/unstable; ``"high"`` with no flag and a small (or no) spread."""
    if LOW_CONFIDENCE_FLAGS.intersection(flags):
        return "low"
    if not flags and (spread_decades is None or spread_decades <= HIGH_CONFIDENCE_SPREAD_DECADES):
        return "high"
    return "medium"


def suggest(lrs: npt.ArrayLike, losses: npt.ArrayLike, *, diverged: bool) -> Suggestion:
    """Suggest a learning rate and the bounds of the useful region from one range-test curve.

    Args:
        lrs: The LR ladder actually run (positive, strictly increasing; exponential or linear spacing).
        losses: Raw per-step losses (not smoothed), one per LR. Only the finite prefix is used.
        diverged: Whether the sweep stopped on divergence.

    Returns:
        The :class:`Suggestion` (see the module docstring for the rule).

    Raises:
        UsageError: Mismatched lengths, fewer than :data:`MIN_POINTS` finite points, or a ladder that is not
            positive and increasing.
    """
    return _suggest_curve(_prepare(lrs, losses), diverged=diverged)


def _suggest_curve(c: _Curve, *, diverged: bool) -> Suggestion:
    """:func:`suggest` on a prepared curve."""
    x, y, s, slope, i0 = c.x, c.y, c.s, c.slope, c.i0

    i_min = i0 + int(np.argmin(s[i0:]))
    peak = float(np.max(s[i0 : i_min + 1]))
    drop = peak - float(s[i_min])
    above = np.flatnonzero(s[i_min:] > peak)
    i_end = i_min + int(above[0]) if len(above) else c.n_fit  # usable region: [i0, i_end)
    climbed = len(above) > 0 or c.n_fit < len(y)  # back past its starting level, or a tail was cut
    rise = drop if climbed else float(np.max(s[i_min:])) - float(s[i_min])
    noise = _mad_sigma(y[i0:i_end] - s[i0:i_end])

    # Steepest descent before the minimum.
    i_s = i0 + int(np.argmin(slope[i0 : i_min + 1]))
    steep = float(slope[i_s])
    if steep < 0:
        x_s = _parabolic_vertex(x, slope, i_s, i0, i_min)
        region = slope[i0 : i_min + 1]
        # Valley: longest contiguous stretch (in decades) descending at >= VALLEY_SLOPE_FRACTION of the best.
        runs = _runs(region <= VALLEY_SLOPE_FRACTION * steep)
        first, last = max(runs, key=lambda r: (x[i0 + r[1]] - x[i0 + r[0]], -abs(i0 + r[0] - i_s)))
        x_v = 0.5 * (float(x[i0 + first]) + float(x[i0 + last]))
        # lr_low: going left from the steepest point, where the descent reaches LOW_SLOPE_FRACTION.
        thr_low = LOW_SLOPE_FRACTION * steep
        j, _ = _run_around(slope <= thr_low, i_s, i0, i_s + 1)
        x_low = _crossing(x, slope, j, j - 1, thr_low) if j > i0 else float(x[j])
    else:  # no descent at all: the loss only rises (or the minimum is the first usable point)
        x_s = x_v = x_low = float(x[i_min])
    # Bottom band: the contiguous stretch around the minimum within BOTTOM_FRACTION of the drop from it.
    # lr_high is where the curve enters it (the loss has done nearly all of its improving); the minimum is
    # its log-midpoint, which a flat, noisy bottom cannot move as much as the argmin.
    level = float(s[i_min]) + BOTTOM_FRACTION * drop
    a, b = _run_around(s <= level, i_min, i0, i_end)
    x_left = _crossing(x, s, a, a - 1, level) if a > i0 else float(x[a])
    x_right = _crossing(x, s, b, b + 1, level) if b + 1 < i_end else float(x[b])
    x_m = 0.5 * (x_left + x_right)

    log_est = {"steepest": x_s, "valley": x_v, "minimum": x_m, "minimum_div10": x_m - 1.0}
    x_high = max(min(x_right, x_m + HIGH_DECADES), x_s)
    x_sugg = min(max(combine_estimates(log_est), x_low), x_high)
    x_low = min(max(x_low, x_high - LOW_MAX_DECADES), x_sugg)

    flags = set()
    if not diverged and rise <= RISE_FRACTION * drop:
        flags.add("no_divergence")
    if drop <= FLAT_SNR * noise or drop == 0:
        flags.add("flat_curve")
    elif drop <= NOISY_SNR * noise:
        flags.add("noisy")
    margin = max(1, round(BOUNDARY_FRACTION * (i_end - i0)))
    i_sugg = int(np.argmin(np.abs(x - x_sugg)))
    if i_sugg - i0 < margin or (i_end - 1) - i_sugg < margin or i_s - i0 < margin:
        flags.add("at_boundary")
    flag_tuple = tuple(sorted(flags))
    logger.debug("suggest: drop=%.4g noise=%.4g estimates=%s flags=%s", drop, noise, log_est, flags)
    return Suggestion(
        suggested_lr=float(10.0**x_sugg),
        lr_low=float(10.0**x_low),
        lr_high=float(10.0**x_high),
        flags=flag_tuple,
        method=METHOD,
        estimates={name: float(10.0**v) for name, v in log_est.items()},
        confidence=confidence_from(flag_tuple),
    )


# ---------------------------------------------------------------------------------------------------------
# Repeats


def consensus(lrs: npt.ArrayLike, curves: Sequence[npt.ArrayLike], *, diverged: Sequence[bool]) -> Consensus:
    """Combine several reseeded sweeps over the same ladder.

    The median curve is the elementwise median of the raw curves over the repeats still running at each step
    (a repeat stops at its first NaN/inf or at its end); it stops where fewer than half of the repeats remain.
    The suggestion comes from the median curve (diverged when at least half of the repeats diverged); the
    spread is ``max - min`` of ``log10(suggested_lr)`` over the repeats, and above
    :data:`UNSTABLE_SPREAD_DECADES` adds the ``unstable`` flag. With one curve this equals :func:`suggest`.

    Args:
        lrs: The common LR ladder.
        curves: Raw loss curves, each as long as ``lrs`` or a prefix of it.
        diverged: Whether each sweep stopped on divergence.

    Raises:
        UsageError: No curves, mismatched ``diverged``, a curve longer than the ladder, or a median curve
            with too few points.
    """
    ladder = _as_ladder(lrs)
    if len(curves) == 0:
        raise UsageError("consensus needs at least one loss curve")
    if len(diverged) != len(curves):
        raise UsageError(f"one diverged flag per curve is needed: {len(curves)=}, {len(diverged)=}")
    stacked = np.full((len(curves), len(ladder)), np.nan)
    for r, curve in enumerate(curves):
        c = np.asarray(curve, dtype=np.float64)
        if c.ndim != 1 or len(c) > len(ladder):
            raise UsageError(f"curve {r} has shape {c.shape}, longer than the ladder ({len(ladder)} LRs)")
        bad = np.flatnonzero(~np.isfinite(c))
        m = int(bad[0]) if len(bad) else len(c)
        stacked[r, :m] = c[:m]
    running = np.isfinite(stacked).sum(axis=0)
    short = np.flatnonzero(2 * running < len(curves))
    m = int(short[0]) if len(short) else len(ladder)
    if m < MIN_POINTS:
        raise UsageError(
            f"the median curve has {m} points (at least half of the {len(curves)} repeats must still be "
            f"running), at least {MIN_POINTS} are needed; run longer sweeps or start from a lower LR"
        )
    # Elementwise median of the repeats still running (NaN sorts last): the middle one or two of each column.
    ordered = np.sort(stacked[:, :m], axis=0)
    count, col = running[:m], np.arange(m)
    median = (ordered[(count - 1) // 2, col] + ordered[count // 2, col]) / 2
    median_diverged = 2 * sum(bool(d) for d in diverged) >= len(curves)
    prepared = _prepare(ladder[:m], median)
    base = _suggest_curve(prepared, diverged=median_diverged)

    per_repeat: list[Suggestion] = []
    if len(curves) == 1:  # the median curve is the curve's finite prefix
        per_repeat.append(base)
    else:
        for r, (curve, div) in enumerate(zip(curves, diverged, strict=True)):
            c = np.asarray(curve, dtype=np.float64)
            try:
                per_repeat.append(suggest(ladder[: len(c)], c, diverged=bool(div)))
            except UsageError as err:
                logger.warning("repeat %d left out of the spread: %s", r, err)
    spread: float | None = None
    if len(per_repeat) >= 2:
        logs = np.log10([p.suggested_lr for p in per_repeat])
        spread = float(np.max(logs) - np.min(logs))
    flags = set(base.flags)
    if spread is not None and spread > UNSTABLE_SPREAD_DECADES:
        flags.add("unstable")
    flag_tuple = tuple(sorted(flags))
    suggestion = replace(base, flags=flag_tuple, confidence=confidence_from(flag_tuple, spread))
    return Consensus(
        suggestion=suggestion,
        median_losses=median,
        per_repeat=tuple(per_repeat),
        spread_decades=spread,
        smoothed_losses=_smoothed(prepared),
    )
