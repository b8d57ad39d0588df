"""Tests of lrtune.suggest on synthetic curves whose right answer is known."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

from lrtune import suggest as sg
from lrtune.errors import UsageError

X0 = -3.0  # log10 of the steepest point of the synthetic descent


def descent(x: np.ndarray, *, centre: float = X0, width: float = 0.35) -> np.ndarray:
    """Sigmoid descent 2.3 -> 0.3 in log10(lr), centred at ``centre``, plus an exponential blow-up."""
    return 2.3 - 2.0 / (1.0 + np.exp(-(x - centre) / width)) + 0.02 * np.exp(3.0 * (x + 0.7))


def ladder(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    lrs = np.logspace(-7, 1, n)
    return lrs, np.log10(lrs)


def clean_minimum() -> float:
    grid = np.linspace(-7, 1, 80001)
    return float(grid[np.argmin(descent(grid))])


def clean_band(curve: Callable[[np.ndarray], np.ndarray] = descent) -> tuple[float, float]:
    """log10 LRs where the noise-free curve enters and leaves its bottom band (BOTTOM_FRACTION of the drop)."""
    grid = np.linspace(-7, 1, 80001)
    v = curve(grid)
    i = int(np.argmin(v))
    level = v[i] + sg.BOTTOM_FRACTION * (np.max(v[: i + 1]) - v[i])
    return float(grid[: i + 1][v[: i + 1] > level][-1]), float(grid[i:][v[i:] > level][0])


def clean_high(curve: Callable[[np.ndarray], np.ndarray] = descent) -> float:
    """The calibrated lr_high of the noise-free curve: band midpoint + HIGH_DECADES, at most the band's exit."""
    left, right = clean_band(curve)
    return min(right, 0.5 * (left + right) + sg.HIGH_DECADES)


def clean_suggestion() -> float:
    """The calibrated suggestion of the noise-free curve: SUGGEST_POSITION of the way from X0 to the minimum."""
    return X0 + sg.SUGGEST_POSITION * (clean_minimum() - X0)


def noisy(seed: int, sd: float = 0.2, n: int = 200, **kw: float) -> tuple[np.ndarray, np.ndarray]:
    lrs, x = ladder(n)
    return lrs, descent(x, **kw) + np.random.default_rng(seed).normal(0.0, sd, n)


def log(v: float) -> float:
    return float(np.log10(v))


def causal_ema_steepest(lrs: np.ndarray, y: np.ndarray, beta: float = 0.98) -> float:
    """The popular baseline: bias-corrected causal EMA, steepest point of its gradient in log-LR."""
    avg, ema = 0.0, []
    for i, v in enumerate(y):
        avg = beta * avg + (1 - beta) * v
        ema.append(avg / (1 - beta ** (i + 1)))
    keep = slice(len(y) // 10, -5)
    x = np.log10(lrs[keep])
    return float(x[np.argmin(np.gradient(np.array(ema)[keep], x))])


# --------------------------------------------------------------------------------------------------------
# One curve


def test_clean_sigmoid_estimates_and_bounds() -> None:
    lrs, x = ladder()
    s = sg.suggest(lrs, descent(x), diverged=True)
    est = {k: log(v) for k, v in s.estimates.items()}
    assert abs(est["steepest"] - X0) <= 0.1
    assert abs(causal_ema_steepest(lrs, descent(x)) - X0) >= 0.4  # the lagged baseline this beats
    assert abs(est["valley"] - X0) <= 0.2
    assert abs(est["minimum"] - clean_minimum()) <= 0.1
    assert est["minimum_div10"] == pytest.approx(est["minimum"] - 1.0, abs=1e-12)
    low, sugg, high = log(s.lr_low), log(s.suggested_lr), log(s.lr_high)
    assert est["steepest"] < sugg < est["minimum"] < high and low < sugg
    descent_x = 0.5 * (est["steepest"] + est["valley"])
    assert sugg == pytest.approx(descent_x + sg.SUGGEST_POSITION * (est["minimum"] - descent_x), abs=1e-12)
    assert abs(sugg - clean_suggestion()) <= 0.1
    # lr_high: HIGH_DECADES above the minimum (the band's exit is further right on this curve).
    assert high == pytest.approx(est["minimum"] + sg.HIGH_DECADES, abs=1e-12)
    assert abs(high - clean_high()) <= 0.05 and clean_high() < clean_band()[1]
    # The descent starts over 3 decades below lr_high (the slope is 20% of its peak at -3 - 0.7·acosh(√5)):
    # the range is cut to LOW_MAX_DECADES.
    assert high - low == pytest.approx(sg.LOW_MAX_DECADES, abs=1e-12)
    assert s.flags == () and s.confidence == "high"
    assert s.method == sg.METHOD


def test_noisy_sigmoid_over_seeds() -> None:
    """50 seeds, N=200, per-step noise sd 0.2 on a drop of 2."""
    steep, sugg, high = [], [], []
    for seed in range(50):
        lrs, y = noisy(seed)
        s = sg.suggest(lrs, y, diverged=True)
        steep.append(log(s.estimates["steepest"]))
        sugg.append(log(s.suggested_lr))
        assert s.lr_low <= s.suggested_lr <= s.lr_high
        high.append(log(s.lr_high))
        assert "flat_curve" not in s.flags
    steep_a, sugg_a = np.array(steep), np.array(sugg)
    q25, q75 = np.percentile(steep_a, [25, 75])
    assert abs(np.median(steep_a) - X0) <= 0.1
    assert np.median(np.abs(steep_a - X0)) <= 0.2
    assert q75 - q25 <= 0.3
    s25, s75 = np.percentile(sugg_a, [25, 75])
    assert abs(np.median(sugg_a) - clean_suggestion()) <= 0.1
    assert s75 - s25 <= 0.2
    h25, h50, h75 = np.percentile(high, [25, 50, 75])
    assert abs(h50 - clean_high()) <= 0.15 and h75 - h25 <= 0.3


def test_high_bound_stops_where_the_loss_rises_again() -> None:
    """A narrow bottom: lr_high is where the loss leaves it, well short of HIGH_DECADES above the minimum."""
    lrs, x = ladder()

    def narrow(v: np.ndarray) -> np.ndarray:  # steepest at -2, a sharp rise from about -1.5
        return 2.3 - 2.0 / (1.0 + np.exp(-(v + 2.0) / 0.1)) + 0.1 * np.exp(10.0 * (v + 1.5))

    left, right = clean_band(narrow)
    assert right < 0.5 * (left + right) + sg.HIGH_DECADES - 0.1  # the band's exit is the binding limit
    s = sg.suggest(lrs, narrow(x), diverged=True)
    low, minimum, high = log(s.lr_low), log(s.estimates["minimum"]), log(s.lr_high)
    assert right - 0.15 <= high <= right + 0.02  # smoothing can only bring the sharp rise forward
    assert minimum < high < minimum + sg.HIGH_DECADES - 0.1
    # lr_low is the onset of the descent: the sigmoid's slope is 20% of its peak at -2 - 0.1·2·acosh(√5).
    onset = -2.0 - 0.2 * np.arccosh(np.sqrt(5.0))
    assert onset - 0.15 <= low <= onset and high - low < sg.LOW_MAX_DECADES
    assert low < log(s.suggested_lr) < minimum


def test_loss_spikes_are_ignored() -> None:
    lrs, y = noisy(3)
    spiky = y.copy()
    rng = np.random.default_rng(7)
    hit = rng.choice(len(y), size=8, replace=False)
    spiky[hit] += 3.0 + 3.0 * rng.random(8)
    a, b = sg.suggest(lrs, y, diverged=True), sg.suggest(lrs, spiky, diverged=True)
    for key in ("steepest", "minimum"):
        assert abs(log(a.estimates[key]) - log(b.estimates[key])) <= 0.1
    assert abs(log(a.suggested_lr) - log(b.suggested_lr)) <= 0.05


@pytest.mark.parametrize("transform", [lambda y: y - 10.0, lambda y: y * 0.01, lambda y: 3.0 * y - 50.0])
def test_shift_and_scale_invariance(transform) -> None:
    lrs, y = noisy(11)
    a = sg.suggest(lrs, y, diverged=True)
    b = sg.suggest(lrs, transform(y), diverged=True)
    assert b.flags == a.flags and b.confidence == a.confidence
    for attr in ("suggested_lr", "lr_low", "lr_high"):
        assert getattr(b, attr) == pytest.approx(getattr(a, attr), rel=1e-9)
    assert b.estimates == pytest.approx(a.estimates, rel=1e-9)


def test_negative_losses() -> None:
    """A Gaussian-NLL-like curve entirely below zero gives the same answer as the curve shifted up."""
    lrs, y = noisy(5)
    neg = y - 25.0
    assert np.all(neg < 0)
    s = sg.suggest(lrs, neg, diverged=True)
    assert abs(log(s.estimates["steepest"]) - X0) <= 0.3
    assert s.suggested_lr == pytest.approx(sg.suggest(lrs, y, diverged=True).suggested_lr, rel=1e-9)


def test_flat_curve_is_flagged_low() -> None:
    lrs, x = ladder()
    rng = np.random.default_rng(0)
    y = (
        0.3
        - 0.02 / (1 + np.exp(-(x - X0) / 0.35))
        + 0.02 * np.exp(3 * (x + 0.7))
        + rng.normal(0, 0.05, len(x))
    )
    s = sg.suggest(lrs, y, diverged=True)
    assert "flat_curve" in s.flags
    assert s.confidence == "low"
    assert s.lr_low <= s.suggested_lr <= s.lr_high


def test_curve_that_never_rises_flags_no_divergence() -> None:
    lrs, x = ladder()
    keep = x <= -1.5  # the sweep ended while the loss was still (slowly) improving
    y = 2.3 - 2.0 / (1 + np.exp(-(x[keep] - X0) / 0.35))
    s = sg.suggest(lrs[keep], y, diverged=False)
    assert "no_divergence" in s.flags and s.confidence == "medium"
    assert abs(log(s.estimates["steepest"]) - X0) <= 0.1
    assert "no_divergence" not in sg.suggest(lrs[keep], y, diverged=True).flags
    # A full curve that climbs back after its minimum needs no divergence stop to be trusted.
    assert "no_divergence" not in sg.suggest(lrs, descent(x), diverged=False).flags


def test_descent_before_the_sweep_is_at_boundary() -> None:
    lrs, x = ladder()
    s = sg.suggest(lrs, descent(x, centre=-7.3), diverged=True)
    assert "at_boundary" in s.flags and s.confidence == "low"


def test_rising_curve_is_degenerate_but_ordered() -> None:
    lrs, x = ladder()
    s = sg.suggest(lrs, 0.5 + 0.1 * np.exp(x + 7), diverged=True)
    assert s.lr_low == s.suggested_lr == s.lr_high
    assert {"at_boundary", "flat_curve"} <= set(s.flags)


def test_non_finite_tail_is_truncated() -> None:
    lrs, y = noisy(2)
    for bad in (np.nan, np.inf, -np.inf):
        tail = y.copy()
        tail[180:] = bad
        assert sg.suggest(lrs, tail, diverged=True) == sg.suggest(lrs[:180], y[:180], diverged=True)
    out = sg.smooth(lrs, np.where(np.arange(len(y)) >= 180, np.nan, y))
    assert out.shape == y.shape
    assert np.all(np.isfinite(out[:180])) and np.all(np.isnan(out[180:]))


def test_blow_up_tail_is_cut_consistently() -> None:
    """A finder that records a few exploding steps before stopping gets the same answer as one that stops."""
    lrs, x = ladder()
    y = descent(x)
    exploded = y.copy()
    exploded[175:180] = [5.0, 20.0, 1e3, 1e6, 1e9]
    exploded[180:] = np.nan
    assert sg.suggest(lrs, exploded, diverged=True) == sg.suggest(lrs[:175], y[:175], diverged=True)
    sm = sg.smooth(lrs, exploded)
    assert np.array_equal(sm[175:180], exploded[175:180])  # the tail is returned raw, not smeared


def test_linear_ladder() -> None:
    lrs = np.linspace(1e-3, 1.0, 300)
    x = np.log10(lrs)
    y = 2.3 - 2.0 / (1 + np.exp(-(x + 1.0) / 0.2)) + 0.05 * np.exp(8 * (x + 0.2))
    y = y + np.random.default_rng(1).normal(0, 0.05, len(x))
    s = sg.suggest(lrs, y, diverged=True)
    assert abs(log(s.estimates["steepest"]) + 1.0) <= 0.1
    assert s.lr_low < s.suggested_lr < s.lr_high
    assert "at_boundary" not in s.flags and "flat_curve" not in s.flags


def test_smooth_is_zero_phase_and_exact_on_lines() -> None:
    lrs, x = ladder(300)
    dip = 1.0 - np.exp(-0.5 * ((x + 3.0) / 0.4) ** 2)  # symmetric dip at -3
    sm = sg.smooth(lrs, dip)
    assert abs(x[np.argmin(sm)] - (-3.0)) <= 1.01 * (x[1] - x[0])  # no lag
    line = 5.0 - 0.3 * x
    assert np.allclose(sg.smooth(lrs, line), line, rtol=0, atol=1e-9)


def reference_loess(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Textbook LOESS, point by point: a tricube-weighted least-squares line over the k nearest points."""
    n = len(x)
    k = min(max(sg.MIN_SPAN_POINTS, round(sg.SPAN_FRACTION * n)) | 1, n)
    values, slopes = np.empty(n), np.empty(n)
    a = 0
    for i in range(n):
        while a + k < n and x[a + k] - x[i] < x[i] - x[a]:  # slide while that brings the window closer
            a += 1
        d = x[a : a + k] - x[i]
        w = np.sqrt((1.0 - np.abs(d / (np.max(np.abs(d)) * (1.0 + 1.0 / k))) ** 3) ** 3)
        fit = np.linalg.lstsq(np.stack([w, w * d], axis=1), w * y[a : a + k], rcond=None)[0]
        values[i], slopes[i] = fit
    return values, slopes


def reference_running_median(y: np.ndarray) -> np.ndarray:
    w = max(3, round(sg.MEDIAN_FRACTION * len(y)) | 1)
    padded = np.concatenate([np.full(w // 2, np.nan), y, np.full(w // 2, np.nan)])
    return np.nanmedian(np.lib.stride_tricks.sliding_window_view(padded, w), axis=1)


@pytest.mark.parametrize("spacing", ["exp", "linear", "random"])
def test_fast_smoothing_matches_the_textbook_definition(spacing: str) -> None:
    """Equal gaps take the correlation path, others the point-by-point one; both are the same LOESS."""
    rng = np.random.default_rng(["exp", "linear", "random"].index(spacing))
    for n in (10, 37, 200, 1001):
        if spacing == "exp":
            lrs = 1e-7 * 1e8 ** (np.arange(n) / (n - 1))
        elif spacing == "linear":
            lrs = np.linspace(1e-3, 1.0, n)
        else:
            lrs = np.sort(10 ** rng.uniform(-7, 1, n))
        x = np.log10(lrs)
        y = 50.0 + rng.normal(0, 1, n).cumsum() * 10 ** rng.uniform(-2, 2)
        y[rng.choice(n, 3)] += 40.0
        fast, slope = sg._loess(x, y)
        ref, ref_slope = reference_loess(x, y)
        scale = np.ptp(y)
        assert np.max(np.abs(fast - ref)) <= 1e-9 * scale
        assert np.max(np.abs(slope - ref_slope)) <= 1e-9 * np.max(np.abs(ref_slope))
        rough = sg._running_median(y)
        assert np.array_equal(rough, reference_running_median(y))
        for m in (n - 1, n // 2 + 5):  # a prefix reuses the longer curve's medians
            assert np.array_equal(sg._running_median(y[:m], rough), reference_running_median(y[:m]))


def test_steepest_is_accurate_for_short_and_long_sweeps() -> None:
    """The window is a fraction of the points, so 100 or 400 points over the same decades agree."""
    for n in (100, 400):
        lrs, x = ladder(n)
        s = sg.suggest(lrs, descent(x), diverged=True)
        assert abs(log(s.estimates["steepest"]) - X0) <= 0.1


@pytest.mark.parametrize(
    ("lrs", "losses", "match"),
    [
        (np.logspace(-5, 0, 20), np.ones(19), "one value per learning rate"),
        (np.logspace(-5, 0, 20), np.r_[np.ones(5), np.nan * np.ones(15)], "5 finite points"),
        (np.logspace(-5, 0, 5), np.ones(5), "5 finite points"),
        (np.logspace(0, -5, 20), np.ones(20), "strictly increasing"),
        (np.linspace(-1, 1, 20), np.ones(20), "finite and positive"),
        (np.r_[np.logspace(-5, 0, 19), np.nan], np.ones(20), "finite and positive"),
        (np.ones((4, 5)), np.ones(20), "1-D"),
    ],
)
def test_bad_input_raises_usage_error(lrs: np.ndarray, losses: np.ndarray, match: str) -> None:
    with pytest.raises(UsageError, match=match) as err:
        sg.suggest(lrs, losses, diverged=True)
    assert isinstance(err.value, ValueError) and err.value.exit_code == 2
    assert "\n" not in str(err.value)
    with pytest.raises(UsageError):
        sg.smooth(lrs, losses)


def test_to_dict_is_json_ready() -> None:
    lrs, y = noisy(4)
    s = sg.suggest(lrs, y, diverged=True)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["suggested_lr"] == s.suggested_lr and d["flags"] == list(s.flags)
    assert set(d) == {"suggested_lr", "lr_low", "lr_high", "flags", "method", "estimates", "confidence"}
    assert set(d["estimates"]) == {"steepest", "valley", "minimum", "minimum_div10"}


def test_combine_estimates() -> None:
    est = {"steepest": -3.2, "valley": -2.8, "minimum": -1.0, "minimum_div10": -2.0}
    # SUGGEST_POSITION (3/4) of the way from the descent (-3) to the minimum (-1).
    assert sg.combine_estimates(est) == pytest.approx(-3.0 + 0.75 * 2.0)
    # steepest and valley disagree by more than DISAGREEMENT_DECADES: minimum/10 breaks the tie.
    est = {"steepest": -5.0, "valley": -3.5, "minimum": -1.0, "minimum_div10": -2.0}
    assert sg.combine_estimates(est) == pytest.approx(-3.5 + 0.75 * 2.5)


def test_confidence_from_flags_and_spread() -> None:
    assert sg.confidence_from(()) == "high"
    assert sg.confidence_from((), 0.1) == "high"
    assert sg.confidence_from((), 0.4) == "medium"
    assert sg.confidence_from(("noisy",)) == "medium"
    assert sg.confidence_from(("no_divergence",)) == "medium"
    for flag in ("flat_curve", "at_boundary", "unstable"):
        assert sg.confidence_from((flag, "noisy")) == "low"
    assert set(sg.LOW_CONFIDENCE_FLAGS) <= set(sg.FLAGS)


# --------------------------------------------------------------------------------------------------------
# Repeats


def test_consensus_of_one_curve_equals_suggest() -> None:
    lrs, y = noisy(8)
    y = y.copy()
    y[190:] = np.nan
    c = sg.consensus(lrs, [y], diverged=[True])
    assert c.suggestion == sg.suggest(lrs, y, diverged=True)
    assert c.spread_decades is None
    assert len(c.per_repeat) == 1 and c.per_repeat[0] == c.suggestion
    assert np.array_equal(c.median_losses, y[:190])
    assert np.array_equal(c.smoothed_losses, sg.smooth(lrs, y)[:190])


def test_consensus_median_of_shifted_prefixes() -> None:
    lrs, x = ladder()
    base = descent(x)
    curves = [base, base[:160] + 1.0, base[:120] + 2.0]
    c = sg.consensus(lrs, curves, diverged=[False, True, True])
    assert len(c.median_losses) == 160  # past 160 only one of three repeats is left
    assert np.allclose(c.median_losses[:120], base[:120] + 1.0)
    assert np.allclose(c.median_losses[120:160], base[120:160] + 0.5)
    alone = sg.suggest(lrs[:160], c.median_losses, diverged=True)
    assert np.array_equal(c.smoothed_losses, sg.smooth(lrs[:160], c.median_losses))
    for attr in ("suggested_lr", "lr_low", "lr_high", "estimates"):
        assert getattr(c.suggestion, attr) == getattr(alone, attr)
    # The repeat cut at 120 stopped mid-descent: the repeats disagree.
    assert c.spread_decades is not None and "unstable" in c.suggestion.flags
    # A NaN stops a repeat just like its end does.
    with_nan = np.r_[base[:120] + 2.0, np.nan, base[121:] + 2.0]
    again = sg.consensus(lrs, [base, base[:160] + 1.0, with_nan], diverged=[False, True, True])
    assert np.array_equal(again.median_losses, c.median_losses)


def test_consensus_spread_grows_with_noise() -> None:
    lrs, x = ladder()
    same = sg.consensus(lrs, [descent(x)] * 3, diverged=[True] * 3)
    assert same.spread_decades == 0.0 and same.suggestion.confidence == "high"
    mean_spread = {}
    for sd in (0.1, 0.4):
        spreads = []
        for group in range(6):
            curves = [noisy(100 * group + r, sd=sd)[1] for r in range(4)]
            spread = sg.consensus(lrs, curves, diverged=[True] * 4).spread_decades
            assert spread is not None and spread > 0
            spreads.append(spread)
        mean_spread[sd] = float(np.mean(spreads))
    assert mean_spread[0.4] > 1.5 * mean_spread[0.1]


def test_consensus_flags_unstable_repeats() -> None:
    lrs, x = ladder()
    curves = [descent(x, centre=c) for c in (-4.0, -3.0, -2.0)]
    c = sg.consensus(lrs, curves, diverged=[True] * 3)
    assert c.spread_decades is not None and c.spread_decades > sg.UNSTABLE_SPREAD_DECADES
    assert "unstable" in c.suggestion.flags and c.suggestion.confidence == "low"
    assert all("unstable" not in p.flags for p in c.per_repeat)
    d = json.loads(json.dumps(c.to_dict()))
    assert d["spread_decades"] == c.spread_decades and len(d["per_repeat"]) == 3
    assert d["smoothed_losses"] == c.smoothed_losses.tolist() and len(d["median_losses"]) == 200


def test_consensus_skips_unusable_repeat() -> None:
    lrs, x = ladder()
    short = np.r_[descent(x)[:5], np.nan]
    c = sg.consensus(lrs, [descent(x), descent(x), short], diverged=[True, True, True])
    assert len(c.per_repeat) == 2 and c.spread_decades == 0.0


def test_consensus_bad_input() -> None:
    lrs, x = ladder()
    early = np.r_[descent(x)[:8], np.full(192, np.nan)]
    with pytest.raises(UsageError, match="median curve has 8 points"):
        sg.consensus(lrs, [early, early, descent(x)], diverged=[True] * 3)
    with pytest.raises(UsageError, match="at least one"):
        sg.consensus(lrs, [], diverged=[])
    with pytest.raises(UsageError, match="one diverged flag per curve"):
        sg.consensus(lrs, [descent(x)], diverged=[True, False])
    with pytest.raises(UsageError, match="longer than the ladder"):
        sg.consensus(lrs[:50], [descent(x)], diverged=[True])
