"""The range test: ladder, per-group LRs, exact restore, divergence, accumulation, repeats, syncs, files."""

from __future__ import annotations

import copy
import json
import logging
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import lrtune.finder.amp as finder_amp
import lrtune.finder.batches as finder_batches
import lrtune.finder.core as finder_core
import lrtune.finder.monitor as finder_monitor
import lrtune.finder.sweep as finder_sweep
from lrtune import FinderResult, LRFinder
from lrtune.errors import UsageError
from lrtune.finder import SweepSettings, lr_ladder

CONTRACT_KEYS = {
    "suggested_lr",
    "lr_low",
    "lr_high",
    "lrs",
    "losses",
    "diverged",
    "num_iter",
    "repeats",
    "spread_decades",
    "flags",
    "method",
}


# ---------------------------------------------------------------------------------------------------------
# Fixtures and helpers


def regression_data(n: int = 256, seed: int = 0, noise: float = 0.1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + noise * torch.randn(n, generator=g)
    return x, y[:, None]


def batches(x: Tensor, y: Tensor, size: int) -> list[tuple[Tensor, Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


class Net(nn.Module):
    """Tiny MLP with batch norm (buffers), dropout (RNG) and a non-persistent buffer."""

    calls: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 1)
        )
        self.register_buffer("calls", torch.zeros(()), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        self.calls.add_(1)
        return self.body(x)


def make_setup(optimizer: str = "adam", *, warm: bool = True) -> tuple[Net, torch.optim.Optimizer, Any]:
    """A model and a two-group optimizer that already has state, grads, and an attached scheduler."""
    torch.manual_seed(0)
    model = Net()
    groups = [
        {"params": model.body[0].parameters(), "lr": 0.01},
        {"params": [*model.body[1].parameters(), *model.body[4].parameters()], "lr": 0.001},
    ]
    opt: torch.optim.Optimizer
    opt = torch.optim.Adam(groups) if optimizer == "adam" else torch.optim.SGD(groups, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    if warm:
        x, y = regression_data(64, seed=1)
        for _ in range(2):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            scheduler.step()
        nn.functional.mse_loss(model(x), y).backward()  # leave grads behind
    model.body[3].eval()  # a submodule in a different mode than its parent
    return model, opt, scheduler


def capture(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """A deep, independent record of everything a range test must leave untouched."""
    return {
        "opt_called": opt.__dict__.get("_opt_called", "missing"),
        "params": [(id(p), p.detach().clone()) for p in model.parameters()],
        "buffers": {k: v.clone() for k, v in model.named_buffers()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "opt": copy.deepcopy(opt.state_dict()),
        "modes": [m.training for m in model.modules()],
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def assert_same_tree(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            assert_same_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            assert_same_tree(u, v, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    else:
        assert a == b, where


def assert_unchanged(before: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer) -> None:
    after = capture(model, opt)
    assert [i for i, _ in before["params"]] == [i for i, _ in after["params"]], "parameter identity changed"
    for (_, a), (_, b) in zip(before["params"], after["params"], strict=True):
        assert torch.equal(a, b)
    assert_same_tree(before["buffers"], after["buffers"], "buffers")
    assert_same_tree(before["grads"], after["grads"], "grads")
    assert_same_tree(before["opt"], after["opt"], "optimizer")
    assert before["modes"] == after["modes"]
    assert before["opt_called"] == after["opt_called"]
    assert before["python"] == after["python"]
    assert_same_tree(before["numpy"], after["numpy"], "numpy rng")
    assert torch.equal(before["torch"], after["torch"])


def mse(out: Tensor, y: Tensor) -> Tensor:
    return nn.functional.mse_loss(out, y)


def quiet_range(**overrides: Any) -> dict[str, Any]:
    """A short sweep over a range where nothing diverges."""
    return {"start_lr": 1e-6, "end_lr": 1e-3, "num_iter": 30, "stop_on_divergence": False, **overrides}


# ---------------------------------------------------------------------------------------------------------
# Ladder and settings


def test_exp_ladder_matches_closed_form_with_exact_endpoints() -> None:
    ladder = lr_ladder(1e-7, 10.0, 200, "exp")
    i = np.arange(200)
    np.testing.assert_allclose(ladder, 1e-7 * (10.0 / 1e-7) ** (i / 199), rtol=1e-12)
    assert ladder[0] == 1e-7 and ladder[-1] == 10.0 and len(ladder) == 200
    assert np.allclose(np.diff(np.log10(ladder)), 8 / 199)


def test_linear_ladder_matches_closed_form_with_exact_endpoints() -> None:
    ladder = lr_ladder(0.001, 0.3, 7, "linear")
    np.testing.assert_allclose(ladder, 0.001 + (0.3 - 0.001) * np.arange(7) / 6, rtol=1e-14)
    assert ladder[0] == 0.001 and ladder[-1] == 0.3


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"start_lr": 1.0, "end_lr": 0.1}, "below end_lr"),
        ({"start_lr": 0.1, "end_lr": 0.1}, "below end_lr"),
        ({"start_lr": -1.0}, "positive"),
        ({"start_lr": 0.0}, "positive"),
        ({"end_lr": math.inf}, "finite"),
        ({"start_lr": math.nan}, "finite"),
        ({"num_iter": 1}, "num_iter"),
        ({"step_mode": "cosine"}, "step mode"),
        ({"repeats": 0}, "repeats"),
        ({"accumulation_steps": 0}, "accumulation_steps"),
        ({"poll_every": 0}, "poll_every"),
        ({"beta": 1.0}, "beta"),
        ({"diverge_threshold": 0.0}, "diverge_threshold"),
    ],
)
def test_bad_settings_raise_one_line_usage_error(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        SweepSettings(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_range_test_validates_before_touching_anything() -> None:
    model, opt, _ = make_setup("sgd")
    before = capture(model, opt)
    x, y = regression_data(64)
    with pytest.raises(UsageError, match="repeats"):
        LRFinder(model, opt, mse).range_test(batches(x, y, 16), repeats=0)
    assert_unchanged(before, model, opt)


def test_applied_lr_follows_the_ladder_and_keeps_group_ratios() -> None:
    model, opt, _ = make_setup("sgd", warm=False)
    applied: list[list[float]] = []
    opt.register_step_pre_hook(lambda o, *_: applied.append([float(g["lr"]) for g in o.param_groups]))
    x, y = regression_data(64)
    result = LRFinder(model, opt, mse).range_test(batches(x, y, 16), **quiet_range())
    ladder = lr_ladder(1e-6, 1e-3, 30)
    assert len(applied) == 30
    assert [a[0] for a in applied] == ladder.tolist()  # group 0 follows the ladder exactly
    ratios = [a[1] / a[0] for a in applied]
    np.testing.assert_allclose(ratios, 0.1, rtol=1e-12)  # 0.001 / 0.01 kept at every step
    assert result.lrs == tuple(ladder.tolist())
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.001]


# ---------------------------------------------------------------------------------------------------------
# Exact restore


@pytest.mark.parametrize(("optimizer", "warm"), [("adam", True), ("sgd", True), ("sgd", False)])
def test_state_is_restored_bit_for_bit_after_a_normal_run(optimizer: str, warm: bool) -> None:
    model, opt, scheduler = make_setup(optimizer, warm=warm)
    before = capture(model, opt)
    x, y = regression_data(128)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    result = LRFinder(model, opt, mse).range_test(loader, num_iter=40, repeats=2)
    assert len(result.lrs) > 10
    assert_unchanged(before, model, opt)
    assert "initial_lr" in opt.param_groups[0]
    if warm:
        scheduler.step()  # the attached scheduler still drives the same optimizer
        assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5)
    else:  # the optimizer still counts as never stepped
        with pytest.warns(UserWarning, match="before `optimizer.step"):
            scheduler.step()


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_state_is_restored_when_the_sweep_is_interrupted(error: type[BaseException]) -> None:
    model, opt, _ = make_setup("adam")
    before = capture(model, opt)
    calls = 0

    def criterion(out: Tensor, y: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        if calls == 17:
            raise error("stop here")
        return mse(out, y)

    x, y = regression_data(64)
    with pytest.raises(error):
        LRFinder(model, opt, criterion).range_test(batches(x, y, 16), num_iter=50)
    assert calls == 17
    assert_unchanged(before, model, opt)


def test_training_after_the_range_test_is_bit_identical_to_training_without_it() -> None:
    x, y = regression_data(128)

    def train(run_finder: bool) -> list[Tensor]:
        torch.manual_seed(123)
        model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
        if run_finder:
            LRFinder(model, opt, mse).range_test(loader, num_iter=30, repeats=2)
        for _ in range(2):
            for xb, yb in loader:
                opt.zero_grad()
                mse(model(xb), yb).backward()
                opt.step()
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(train(True), train(False), strict=True):
        assert torch.equal(a, b)


def test_loader_generators_are_reseeded_per_repeat_and_restored() -> None:
    x, y = regression_data(64)
    gen = torch.Generator().manual_seed(7)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=gen)
    state = gen.get_state()
    model, opt, _ = make_setup("sgd", warm=False)
    result = LRFinder(model, opt, mse).range_test(loader, num_iter=20, repeats=2)
    assert result.curves[0] != result.curves[1]  # the loader's own generator was reseeded per repeat
    assert torch.equal(gen.get_state(), state)


def test_parameters_outside_the_model_are_restored() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    scale = nn.Parameter(torch.tensor(1.5))  # trained by the optimizer, used only by the criterion
    groups: list[dict[str, Any]] = [{"params": model.parameters()}, {"params": [scale]}]
    opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    before = capture(model, opt)
    x, y = regression_data(64)
    LRFinder(model, opt, lambda out, target: mse(out * scale, target)).range_test(
        batches(x, y, 16), **quiet_range(end_lr=0.1)
    )
    assert scale.item() == 1.5 and scale.grad is None
    assert_unchanged(before, model, opt)


# ---------------------------------------------------------------------------------------------------------
# Divergence


def gaussian_nll(out: Tensor, y: Tensor) -> Tensor:
    mean, log_var = out[:, :1], out[:, 1:]
    return 0.5 * (log_var + (y - mean) ** 2 * torch.exp(-log_var)).mean()


def test_negative_loss_gets_a_sensible_suggestion_and_diverges() -> None:
    x, y = regression_data(512, noise=0.05)
    torch.manual_seed(0)
    model = nn.Linear(
        4, 2
    )  # outputs (mean, log variance); the mean is already fitted, so the loss starts at ~0
    with torch.no_grad():
        model.weight[0] = torch.tensor([1.0, -2.0, 0.5, 3.0])
        model.bias.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    result = LRFinder(model, opt, gaussian_nll).range_test(loader, start_lr=1e-5, end_lr=100.0, num_iter=100)
    raw = np.asarray(result.curves[0])
    assert abs(raw[:10].mean()) < 0.1 and raw.min() < -1.0  # the loss goes from ~0 to well below zero
    assert result.diverged and 20 < len(raw) < 100
    assert raw[-1] > raw[:10].max() + 1.0  # it stopped on the blow-up, not on the negative values
    assert np.all(np.isfinite(result.losses))
    assert 1e-3 < result.suggested_lr < 1.0
    assert result.lr_low <= result.suggested_lr <= result.lr_high < result.lrs[-1]


def test_nan_loss_stops_early_and_leaves_no_nan() -> None:
    model, opt, _ = make_setup("sgd", warm=False)
    calls = 0

    def criterion(out: Tensor, y: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        loss = mse(out, y)
        return loss * math.nan if calls > 40 else loss

    x, y = regression_data(64)
    result = LRFinder(model, opt, criterion).range_test(batches(x, y, 16), **quiet_range(num_iter=200))
    assert result.diverged and result.diverged_repeats == (True,)
    assert len(result.curves[0]) == 40  # the first NaN update and everything after it are dropped
    assert calls <= 40 + 10  # stopped at the next poll
    assert all(math.isfinite(v) for v in result.losses + result.raw_losses)


def reference_stop(raw: np.ndarray, beta: float = 0.98, k: float = 1.0) -> int | None:
    """The divergence rule, one loss at a time in float64."""
    n = len(raw)
    warm = min(max(8, min(20, n // 10)), n)
    ema, best, start, floor = 0.0, math.inf, 0.0, 0.0
    for i, loss in enumerate(raw):
        if not math.isfinite(loss):
            return i
        ema = beta * ema + (1 - beta) * loss
        smooth = ema / (1 - beta ** (i + 1))
        if i == warm - 1:
            start = float(np.mean(raw[:warm]))
            sigma = 1.2533 * float(np.mean(np.abs(raw[:warm] - start)))
            floor = max(3.0 * sigma, 1e-3 * abs(start), 1e-12)
        if i >= warm - 1:
            best = min(best, smooth)
        if i >= warm and smooth - best > k * max(start - best, floor):
            return i
    return None


def make_monitor(kind: str, n: int) -> finder_monitor._Monitor:
    """A monitor of each strategy; the device one runs on CPU tensors (lagged like on CUDA, or not)."""
    if kind == "host":
        return finder_monitor._HostMonitor(n, beta=0.98, threshold=1.0)
    device = torch.device("cpu")
    return finder_monitor._DeviceMonitor(n, device, beta=0.98, threshold=1.0, lagged=kind == "lagged")


MONITORS = ("host", "device", "lagged")


def run_monitor(raw: np.ndarray, chunk: int, kind: str) -> tuple[int | None, int, np.ndarray]:
    """Feed ``raw`` like a sweep that stops on divergence: (stop step, updates run, recorded losses)."""
    n = len(raw)
    monitor = make_monitor(kind, n)
    stop = (n, n)
    i = 0
    while i < n:
        loss = torch.tensor(raw[i], dtype=torch.float64, requires_grad=True) * 1.0  # like a real loss
        monitor.record(i, loss)
        i += 1
        if i % chunk == 0 or i == n:
            stop = monitor.poll(i, last=i == n)
            if stop[0] < n:
                break
    keep = min(i, stop[1], stop[0] + 1)
    return (stop[0] if stop[0] < n else None), i, monitor.losses(keep)


def monitor_stop(raw: np.ndarray, chunk: int, kind: str = "host") -> int | None:
    return run_monitor(raw, chunk, kind)[0]


@pytest.mark.parametrize("kind", MONITORS)
@pytest.mark.parametrize("seed", range(6))
def test_monitor_matches_the_scalar_rule_and_ignores_shift_and_scale(seed: int, kind: str) -> None:
    rng = np.random.default_rng(seed)
    x = np.linspace(-7, 1, 120)
    clean = 2.3 - 2.0 / (1 + np.exp(-(x + 3) / 0.35)) + 0.02 * np.exp(6 * (x + 0.7))
    raw = clean + rng.normal(0, 0.1 * seed, len(x))
    if seed == 5:
        raw[90] = math.nan
    expected = reference_stop(raw)
    assert expected is not None
    for chunk in (1, 7, 10):
        assert monitor_stop(raw, chunk, kind) == expected
    assert monitor_stop(3.0 * raw - 50.0, 10, kind) == expected  # negative losses: same decision
    flat = np.full(120, -4.0) + rng.normal(0, 0.1, 120)
    assert monitor_stop(flat, 10, kind) is None  # flat noise: no divergence


def loss_sequences() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    x = np.linspace(-7, 1, 150)
    dip = 2.3 - 2.0 / (1 + np.exp(-(x + 3) / 0.35)) + 0.02 * np.exp(6 * (x + 0.7)) + rng.normal(0, 0.05, 150)
    nan_mid = dip.copy()
    nan_mid[40] = math.nan
    inf_early = dip.copy()
    inf_early[3] = math.inf
    blow_up = np.concatenate([np.linspace(1.0, 0.5, 60), 0.5 * 10.0 ** np.arange(1, 30)])
    return {
        "dip then rise": dip,
        "negative": 4.0 * dip - 30.0,
        "nan in the middle": nan_mid,
        "inf in the warm-in": inf_early,
        "flat noise": -4.0 + rng.normal(0, 0.1, 150),
        "blow-up": blow_up,
        "constant": np.full(150, 0.7),
    }


@pytest.mark.parametrize("name", list(loss_sequences()))
def test_host_and_device_monitors_stop_at_the_same_step_with_the_same_losses(name: str) -> None:
    raw = loss_sequences()[name]
    expected = reference_stop(raw.astype(np.float32).astype(np.float64))
    for chunk in (1, 10, 25):
        runs = {kind: run_monitor(raw, chunk, kind) for kind in MONITORS}
        stops = {kind: r[0] for kind, r in runs.items()}
        assert stops == dict.fromkeys(MONITORS, expected), chunk
        host_losses = runs["host"][2]
        assert host_losses.dtype == np.float64
        np.testing.assert_array_equal(host_losses, raw[: len(host_losses)].astype(np.float32))
        for kind in MONITORS:
            np.testing.assert_array_equal(runs[kind][2], host_losses)  # bit for bit, NaN/inf included
        if expected is not None and chunk > 1:  # updates run past the stop: up to one poll, two lagged
            assert runs["host"][1] == runs["device"][1] <= expected + chunk
            assert runs["lagged"][1] <= expected + 2 * chunk


# ---------------------------------------------------------------------------------------------------------
# Accumulation, repeats, validation


def test_accumulation_matches_a_batch_twice_as_large() -> None:
    x, y = regression_data(96)
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    results, steps = [], []
    for size, acc in ((8, 2), (16, 1)):
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        count = [0]
        opt.register_step_post_hook(lambda *_, c=count: c.__setitem__(0, c[0] + 1))
        finder = LRFinder(model, opt, mse)
        results.append(
            finder.range_test(batches(x, y, size), accumulation_steps=acc, **quiet_range(end_lr=0.1))
        )
        steps.append(count[0])
    assert steps == [30, 30]
    np.testing.assert_allclose(results[0].curves[0], results[1].curves[0], rtol=1e-5, atol=1e-6)
    assert results[0].curves[0][0] != results[0].curves[0][-1]  # the updates did change the loss


class ReseedableBatches:
    """A loader with its own generator and ``reseed``."""

    def __init__(self, x: Tensor, y: Tensor, size: int) -> None:
        self.x, self.y, self.size = x, y, size
        self.generator = torch.Generator().manual_seed(0)
        self.seeds: list[int] = []

    def reseed(self, seed: int) -> None:
        self.seeds.append(seed)
        self.generator.manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(self.x), generator=self.generator)
        for i in range(0, len(order), self.size):
            idx = order[i : i + self.size]
            yield self.x[idx], self.y[idx]


def test_repeats_reseed_the_data_order_and_report_a_spread() -> None:
    x, y = regression_data(128)
    loader = ReseedableBatches(x, y, 16)
    state = loader.generator.get_state()
    model, opt, _ = make_setup("sgd", warm=False)
    result = LRFinder(model, opt, mse).range_test(loader, num_iter=60, repeats=3, seed=5)
    assert loader.seeds == [5, 6, 7]
    assert torch.equal(loader.generator.get_state(), state)  # the loader's own generator is restored too
    assert isinstance(result.spread_decades, float) and result.spread_decades >= 0
    assert len(result.curves) == 3 and result.curves[0][:20] != result.curves[1][:20]
    assert 10 <= len(result.lrs) == len(result.losses) == len(result.raw_losses) <= 60
    assert len(result.per_repeat) <= 3 and result.repeats == 3
    single = LRFinder(model, opt, mse).range_test(loader, num_iter=60, seed=5)
    assert single.spread_decades is None
    assert single.curves[0] == result.curves[0]  # repeat 0 of a study uses the same seed as a single sweep


class CountingLoader:
    def __init__(self, data: list[tuple[Tensor, Tensor]]) -> None:
        self.data, self.iterations, self.yielded = data, 0, 0

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self.iterations += 1
        for batch in self.data:
            self.yielded += 1
            yield batch


def test_validation_mode_uses_a_fixed_subset_and_reads_the_validation_curve() -> None:
    x, y = regression_data(256)
    val = CountingLoader(batches(*regression_data(80, seed=9), 10))
    model, opt, _ = make_setup("sgd", warm=False)
    seen: list[tuple[bool, bool]] = []

    def criterion(out: Tensor, target: Tensor) -> Tensor:
        seen.append((model.training, torch.is_grad_enabled()))
        return mse(out, target)

    result = LRFinder(model, opt, criterion).range_test(
        batches(x, y, 16), num_iter=60, val_loader=val, val_batches=3, val_every=4, repeats=2
    )
    assert (val.iterations, val.yielded) == (1, 3)  # cached once, never re-read
    evals = [s for s in seen if s == (False, False)]
    assert len(evals) % 3 == 0 and len(evals) >= 3 * 2 * 10
    ladder = lr_ladder(1e-7, 10.0, 60)
    assert result.loss_source == "val"
    assert result.lrs == tuple(ladder[3::4][: len(result.lrs)].tolist())
    assert result.train_lrs is not None and result.train_losses is not None
    assert len(result.train_lrs) > len(result.lrs)
    assert len(result.losses) == len(result.lrs) >= 10


# ---------------------------------------------------------------------------------------------------------
# Syncs, AMP, misuse


class HostReads:
    """Counts the tensor → host reads (``item``, ``tolist``, ``float``, ``bool``) made inside the block."""

    NAMES = ("item", "tolist", "__float__", "__bool__")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.counts = dict.fromkeys(self.NAMES, 0)

    def __enter__(self) -> HostReads:
        for name in self.NAMES:
            original = getattr(Tensor, name)

            def call(t: Tensor, *args: Any, _name: str = name, _original: Any = original) -> Any:
                self.counts[_name] += 1
                return _original(t, *args)

            self.monkeypatch.setattr(Tensor, name, call)
        return self

    def __exit__(self, *exc: object) -> None:
        self.monkeypatch.undo()


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    """Wrap ``owner.name`` so that every call is counted in the returned one-element list."""
    calls = [0]
    original = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def sync_run(monkeypatch: pytest.MonkeyPatch) -> tuple[FinderResult, list[int], HostReads, list[int]]:
    """A 100-update sweep polled every 25 updates: (result, progress, host reads, rule evaluations)."""
    model, opt, _ = make_setup("sgd", warm=False)
    x, y = regression_data(64)
    progress: list[int] = []
    judged = count_calls(monkeypatch, finder_monitor._DivergenceRule, "feed")
    with HostReads(monkeypatch) as reads:
        result = LRFinder(model, opt, mse).range_test(
            batches(x, y, 16), **quiet_range(num_iter=100, poll_every=25), progress=progress.append
        )
    return result, progress, reads, judged


def test_on_cpu_each_loss_is_read_once_and_judged_once_per_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    result, progress, reads, judged = sync_run(monkeypatch)
    assert reads.counts == {"item": 100, "tolist": 0, "__float__": 0, "__bool__": 0}  # one per update, cheap
    assert judged == [4]
    assert progress == [25, 25, 25, 25]
    assert len(result.curves[0]) == 100


def test_the_device_strategy_copies_to_the_host_once_per_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    expected, _, _, _ = sync_run(monkeypatch)
    monkeypatch.undo()
    monitors: list[finder_monitor._DeviceMonitor] = []

    def lagged(num_iter: int, device: torch.device, *, beta: float, threshold: float) -> Any:
        monitors.append(
            finder_monitor._DeviceMonitor(num_iter, device, beta=beta, threshold=threshold, lagged=True)
        )
        return monitors[-1]

    monkeypatch.setattr(finder_sweep, "_monitor_for", lagged)  # CUDA's strategy, on CPU tensors
    copies = count_calls(monkeypatch, finder_monitor, "_copy_to_host")
    result, progress, reads, judged = sync_run(monkeypatch)
    assert len(monitors) == 1
    assert copies == [4]  # one transfer per poll
    assert sum(reads.counts.values()) == 0  # and no other read
    assert judged == [4]  # each chunk judged once: three a poll late, the last one at the last poll
    assert progress == [25, 25, 25, 25]
    assert result.curves == expected.curves and result.suggested_lr == expected.suggested_lr


def test_amp_on_cpu_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    model, opt, _ = make_setup("sgd", warm=False)
    x, y = regression_data(64)
    with caplog.at_level(logging.WARNING, logger="lrtune.finder"):
        result = LRFinder(model, opt, mse).range_test(batches(x, y, 16), amp=True, **quiet_range())
    assert "amp=True is ignored" in caplog.text
    assert result.settings["amp"] is True and result.settings["amp_dtype"] is None


def test_fp16_overflow_skips_do_not_advance_the_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = finder_amp._AmpPlan(torch.float16, True, "cpu")
    monkeypatch.setattr(finder_core, "_amp_plan", lambda amp, device: plan)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24)
    scaler_state = scaler.state_dict()
    model, opt, _ = make_setup("sgd", warm=False)
    before = capture(model, opt)
    applied: list[float] = []
    opt.register_step_pre_hook(lambda o, *_: applied.append(float(o.param_groups[0]["lr"])))
    calls = 0

    def criterion(out: Tensor, target: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        return mse(out, target)

    x, y = regression_data(64)
    LRFinder(model, opt, criterion).range_test(
        batches(x, y, 16), amp=True, grad_scaler=scaler, **quiet_range()
    )
    assert calls > 30  # some updates overflowed and were retried
    assert applied == lr_ladder(1e-6, 1e-3, 30).tolist()  # ... on the same rung
    assert scaler.state_dict() == scaler_state
    assert_unchanged(before, model, opt)


def test_batches_on_the_device_pass_through_and_others_are_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = regression_data(32)
    moves = count_calls(monkeypatch, Tensor, "to")
    on_cpu = finder_batches._Batches([(x, y), [x, y]], torch.device("cpu"))
    for _ in range(3):  # a tuple, a list, then the loader again
        inputs, targets = on_cpu.next()
        assert inputs is x and targets is y
    assert moves == [0]  # nothing to move, so no .to() call at all
    nested = finder_batches._Batches([({"a": x}, y)], torch.device("cpu"))
    inputs, targets = nested.next()
    assert inputs["a"] is x and targets is y
    elsewhere = finder_batches._Batches([(x, y), ({"a": x}, [y])], torch.device("meta"))
    inputs, targets = elsewhere.next()
    assert inputs.device.type == targets.device.type == "meta" and inputs.shape == x.shape
    inputs, targets = elsewhere.next()
    assert inputs["a"].device.type == targets[0].device.type == "meta"


def test_the_lr_setter_scales_every_group_and_fills_tensor_lrs_in_place() -> None:
    params = [nn.Parameter(torch.zeros(2)) for _ in range(3)]
    lr_tensor = torch.tensor(0.02)
    groups: list[dict[str, Any]] = [
        {"params": [params[0]], "lr": 0.01},
        {"params": [params[1]], "lr": lr_tensor},
        {"params": [params[2]], "lr": 0.001},
    ]
    opt = torch.optim.SGD(groups, lr=0.01)
    finder_sweep._lr_setter(opt, [1.0, 2.0, 0.1])(0.5)
    assert opt.param_groups[1]["lr"] is lr_tensor and float(lr_tensor) == 1.0
    assert [opt.param_groups[0]["lr"], opt.param_groups[2]["lr"]] == [0.5, 0.5 * 0.1]
    plain_groups: list[dict[str, Any]] = [{"params": [params[0]]}, {"params": [params[1]], "lr": 0.1}]
    plain = torch.optim.SGD(plain_groups, lr=0.01)
    finder_sweep._lr_setter(plain, [1.0, 10.0])(0.003)
    assert [g["lr"] for g in plain.param_groups] == [0.003, 0.003 * 10.0]


def test_misuse_is_a_usage_error() -> None:
    model, opt, _ = make_setup("sgd", warm=False)
    x, y = regression_data(64)
    finder = LRFinder(model, opt, lambda out, target: (out - target) ** 2)
    with pytest.raises(UsageError, match="scalar loss"):
        finder.range_test(batches(x, y, 16), num_iter=20)
    with pytest.raises(UsageError, match="pair"):
        LRFinder(model, opt, mse).range_test([x[:16]], num_iter=20)
    with pytest.raises(UsageError, match="no batches"):
        LRFinder(model, opt, mse).range_test([], num_iter=20)
    with pytest.raises(UsageError, match="one-shot"):
        LRFinder(model, opt, mse).range_test(iter(batches(x, y, 16)), num_iter=20)
    with pytest.raises(UsageError, match="at least 10"):
        LRFinder(model, opt, mse).range_test(batches(x, y, 16), num_iter=9)
    with pytest.raises(UsageError, match="validation points"):
        LRFinder(model, opt, mse).range_test(batches(x, y, 16), num_iter=40, val_loader=batches(x, y, 16))
    with pytest.raises(UsageError, match="model is on cpu"):
        LRFinder(model, opt, mse, device="meta")


# ---------------------------------------------------------------------------------------------------------
# Files


@pytest.fixture(scope="module")
def result() -> FinderResult:
    x, y = regression_data(256)
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    return LRFinder(model, opt, mse).range_test(loader, num_iter=80, repeats=2)


def test_json_round_trip_keeps_the_contract_keys(result: FinderResult, tmp_path: Path) -> None:
    path = tmp_path / "out" / "nested" / "finder.json"
    path.parent.mkdir(parents=True)
    path.write_text("old")
    result.save_json(path)
    data = json.loads(path.read_text())
    assert set(data) >= CONTRACT_KEYS
    for key in ("suggested_lr", "lr_low", "lr_high"):
        assert isinstance(data[key], float) and data[key] > 0
    assert isinstance(data["diverged"], bool) and isinstance(data["flags"], list)
    assert data["num_iter"] == 80 and data["repeats"] == 2 and isinstance(data["spread_decades"], float)
    assert len(data["lrs"]) == len(data["losses"]) and all(isinstance(v, float) for v in data["losses"])
    assert FinderResult.load_json(path) == result
    assert sorted(p.name for p in path.parent.iterdir()) == ["finder.json"]  # no temporary file left
    fresh = tmp_path / "fresh.json"
    result.save_json(fresh)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert fresh.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # the usual permissions, not 0600


def test_plot_writes_a_png(result: FinderResult, tmp_path: Path) -> None:
    path = tmp_path / "plots" / "finder.png"
    result.plot(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
