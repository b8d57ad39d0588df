"""Tests of lrtune.schedules: closed forms, the torch adapter, resume, LR dropout, validation."""

from __future__ import annotations

import dataclasses
import gc
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    ExponentialLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    PolynomialLR,
    ReduceLROnPlateau,
    StepLR,
)

import lrtune
from lrtune.errors import UsageError
from lrtune.plots import plot_schedules
from lrtune.schedules import (
    REGISTRY,
    ScheduleLR,
    ScheduleSpec,
    build,
    catalogue,
    describe,
    examples,
    load_schedule,
    lr_at,
    parse_spec,
)

TOTAL = 60
EPOCH = 4  # optimizer steps per epoch when a plateau schedule is driven
EXAMPLES = examples(TOTAL)
NAMES = list(REGISTRY)


def with_warmup(spec: ScheduleSpec, steps: int = 8) -> ScheduleSpec:
    return dataclasses.replace(spec, warmup_steps=steps, warmup_init_lr=spec.base_lr / 40)


def variants() -> list[Any]:
    params = []
    for name in NAMES:
        params.append(pytest.param(EXAMPLES[name], id=name))
        params.append(pytest.param(with_warmup(EXAMPLES[name]), id=f"{name}-warmup"))
    return params


def val_loss(epoch: int) -> float:
    """Improves every fourth epoch and stalls in between: a plateau with patience 2 cuts now and then."""
    return 1.0 / (1.0 + epoch // 4)


def advance(scheduler: ScheduleLR, optimizer: torch.optim.Optimizer, step: int) -> None:
    """One optimizer step, then the scheduler as a training loop drives it."""
    optimizer.step()
    if scheduler.steps_on_metric:
        if (step + 1) % EPOCH == 0:
            scheduler.step(val_loss(step // EPOCH))
    else:
        scheduler.step()


def fresh_optimizer(lr: float = 1.0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Linear(4, 3)
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def lr_sequence(scheduler: LRScheduler, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    """The group-0 LR after 0, 1, ..., steps torch scheduler steps."""
    values = [float(optimizer.param_groups[0]["lr"])]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        values.append(float(optimizer.param_groups[0]["lr"]))
    return values


def close(expected: float) -> Any:
    return pytest.approx(expected, rel=1e-9, abs=1e-15)


# ------------------------------------------------------------------------------- contract, every type
@pytest.mark.parametrize("spec", variants())
def test_lrs_are_finite_and_positive(spec: ScheduleSpec) -> None:
    for k in range(TOTAL + 21):
        value = spec.lr(k, TOTAL)
        assert math.isfinite(value) and value > 0.0, (k, value)


@pytest.mark.parametrize("name", NAMES)
def test_warmup_rises_linearly_from_init_to_base(name: str) -> None:
    spec = with_warmup(EXAMPLES[name], steps=8)
    assert spec.lr(0, TOTAL) == spec.base_lr / 40
    assert spec.lr(4, TOTAL) == close((spec.base_lr / 40 + spec.base_lr) / 2)
    assert spec.lr(8, TOTAL) == close(spec.base_lr)


@pytest.mark.parametrize("name", NAMES)
def test_warmup_init_lr_defaults_to_a_hundredth_of_base_lr(name: str) -> None:
    spec = dataclasses.replace(EXAMPLES[name], warmup_steps=5, warmup_init_lr=None)
    assert spec.lr(0, TOTAL) == close(spec.base_lr / 100)


@pytest.mark.parametrize("spec", variants())
def test_holds_final_value_after_total_steps(spec: ScheduleSpec) -> None:
    final = spec.lr(TOTAL, TOTAL)
    assert [spec.lr(TOTAL + i, TOTAL) for i in range(1, 21)] == [final] * 20
    assert spec.momentum(TOTAL + 5, TOTAL) == spec.momentum(TOTAL, TOTAL)


@pytest.mark.parametrize("spec", variants())
def test_built_scheduler_follows_the_closed_form(spec: ScheduleSpec) -> None:
    _, opt = fresh_optimizer(lr=123.0)  # the optimizer's own lr is ignored
    sched = build(spec, opt, TOTAL)
    assert isinstance(sched, LRScheduler)
    assert sched.steps_on_metric is (spec.type_name == "plateau")
    assert opt.param_groups[0]["lr"] == spec.lr(0, TOTAL)
    for k in range(1, TOTAL + 11):
        opt.step()
        if not sched.steps_on_metric:  # plateau follows optimizer steps itself; no loss = no cut
            sched.step()
        assert sched.get_last_lr() == [spec.lr(k, TOTAL)], k
        assert opt.param_groups[0]["lr"] == spec.lr(k, TOTAL), k


@pytest.mark.parametrize("spec", variants())
def test_group_ratios_are_kept(spec: ScheduleSpec) -> None:
    first, second, frozen = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(
        [
            {"params": first.parameters(), "lr": 0.2},
            {"params": second.parameters(), "lr": 0.05},
            {"params": frozen.parameters(), "lr": 0.0},
        ],
        momentum=0.9,
    )
    sched = build(spec, opt, TOTAL)
    for step in range(TOTAL + 3):
        lrs = [group["lr"] for group in opt.param_groups]
        assert lrs[0] > 0.0
        assert lrs[1] == close(0.25 * lrs[0])
        assert lrs[2] == 0.0
        assert sched.get_last_lr() == lrs
        advance(sched, opt, step)


@pytest.mark.parametrize("spec", variants())
def test_spec_dict_round_trip(spec: ScheduleSpec) -> None:
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["type"] == spec.type_name
    again = parse_spec(data)
    assert again == spec
    assert again.to_dict() == data
    assert parse_spec(spec) is spec


def train_run(spec: ScheduleSpec, steps: int, *, resume_at: int | None = None) -> tuple[list[Any], list[Any]]:
    """Train a tiny model for ``steps`` steps; optionally checkpoint and resume at ``resume_at``.

    Returns the (lr, momentum) after every step and the final parameters.
    """

    def fresh(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, ScheduleLR]:
        torch.manual_seed(seed)
        model, opt = fresh_optimizer()
        return model, opt, build(spec, opt, TOTAL, seed=7)

    model, opt, sched = fresh(0)
    seen = []
    for step in range(steps):
        if step == resume_at:
            buffer = io.BytesIO()
            torch.save(
                {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buffer
            )
            sched.close()
            model, opt, sched = fresh(1)
            buffer.seek(0)
            checkpoint = torch.load(buffer, weights_only=True)
            model.load_state_dict(checkpoint["model"])
            opt.load_state_dict(checkpoint["opt"])
            sched.load_state_dict(checkpoint["sched"])
        data = torch.Generator().manual_seed(1000 + step)
        x, y = torch.randn(8, 4, generator=data), torch.randn(8, 3, generator=data)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        advance(sched, opt, step)
        group = opt.param_groups[0]
        seen.append((group["lr"], group["momentum"]))
    return seen, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("lr_dropout", [1.0, 0.5])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_resumes_exactly(name: str, lr_dropout: float) -> None:
    spec = dataclasses.replace(with_warmup(EXAMPLES[name], steps=6), lr_dropout=lr_dropout)
    straight, straight_params = train_run(spec, TOTAL + 10)
    resumed, resumed_params = train_run(spec, TOTAL + 10, resume_at=37)
    assert resumed == straight
    assert all(torch.equal(a, b) for a, b in zip(resumed_params, straight_params, strict=True))


def test_loading_only_the_scheduler_state_sets_lr_and_momentum() -> None:
    spec = EXAMPLES["one_cycle"]
    _, opt = fresh_optimizer()
    sched = build(spec, opt, TOTAL)
    for step in range(9):
        advance(sched, opt, step)
    _, opt2 = fresh_optimizer()
    build(spec, opt2, TOTAL).load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == spec.lr(9, TOTAL)
    assert opt2.param_groups[0]["momentum"] == opt.param_groups[0]["momentum"] == spec.momentum(9, TOTAL)


def test_a_fresh_run_differs_from_a_resumed_one_without_loading() -> None:
    """Guards the resume test: without loading the state, the LRs after step 37 are not the same."""
    spec = EXAMPLES["cosine"]
    _, opt = fresh_optimizer()
    sched = build(spec, opt, TOTAL)
    for step in range(37):
        advance(sched, opt, step)
    _, opt2 = fresh_optimizer()
    build(spec, opt2, TOTAL)
    assert opt2.param_groups[0]["lr"] != opt.param_groups[0]["lr"]


def test_loading_the_state_of_another_schedule_fails() -> None:
    _, opt = fresh_optimizer()
    state = build(EXAMPLES["cosine"], opt, TOTAL).state_dict()
    _, opt2 = fresh_optimizer()
    with pytest.raises(UsageError, match="saved for"):
        build(EXAMPLES["linear"], opt2, TOTAL).load_state_dict(state)
    with pytest.raises(UsageError, match="saved for"):
        build(EXAMPLES["cosine"], opt2, TOTAL + 1).load_state_dict(state)
    with pytest.raises(UsageError, match="not the state"):
        build(EXAMPLES["cosine"], opt2, TOTAL).load_state_dict({"last_epoch": 3})


# ----------------------------------------------------------------------------- formulas at chosen k
FORMULAS: list[tuple[dict[str, Any], int, int, float]] = [
    ({"type": "constant", "base_lr": 0.3}, 100, 57, 0.3),
    ({"type": "step", "base_lr": 0.1, "decay_rate": 0.5, "decay_steps": 10}, 100, 25, 0.1 * 0.5**2),
    (
        {"type": "step", "base_lr": 0.1, "decay_rate": 0.5, "decay_steps": 10, "warmup_steps": 5},
        100,
        24,
        0.1 * 0.5,
    ),
    ({"type": "multistep", "base_lr": 0.1, "milestones": [10, 30]}, 100, 9, 0.1),
    ({"type": "multistep", "base_lr": 0.1, "milestones": [10, 30]}, 100, 10, 0.1 * 0.1),
    ({"type": "multistep", "base_lr": 0.1, "milestones": [10, 30]}, 100, 30, 0.1 * 0.01),
    ({"type": "exponential", "base_lr": 1.0, "min_lr": 0.01}, 100, 50, 0.1),
    ({"type": "exponential", "base_lr": 1.0, "min_lr": 0.01, "warmup_steps": 20}, 120, 70, 0.1),
    ({"type": "linear", "base_lr": 1.0, "min_lr": 0.1}, 100, 50, 0.55),
    ({"type": "polynomial", "base_lr": 1.0, "min_lr": 0.1, "power": 2}, 100, 50, 0.1 + 0.9 * 0.25),
    ({"type": "cosine", "base_lr": 1.0, "min_lr": 0.1}, 100, 50, 0.55),
    ({"type": "cosine", "base_lr": 1.0, "min_lr": 0.1}, 100, 25, 0.1 + 0.45 * (1 + math.cos(math.pi / 4))),
    ({"type": "cosine", "base_lr": 1.0, "min_lr": 0.1, "warmup_steps": 10}, 110, 60, 0.55),
    ({"type": "cosine", "base_lr": 1.0, "min_lr": 0.1, "warmup_steps": 10}, 110, 110, 0.1),
    # SGDR: cycles of 10, 20, 40 steps starting at 0, 10, 30; peaks 1, 0.5, 0.25.
    *[
        (
            {
                "type": "cosine_restarts",
                "base_lr": 1.0,
                "min_lr": 0.1,
                "cycle_steps": 10,
                "cycle_mult": 2,
                "cycle_decay": 0.5,
            },
            100,
            k,
            expected,
        )
        for k, expected in [(0, 1.0), (5, 0.55), (10, 0.5), (20, 0.3), (30, 0.25)]
    ],
    ({"type": "cosine_restarts", "base_lr": 1.0, "min_lr": 0.1, "cycle_steps": 10}, 100, 45, 0.55),
    # CLR: cycles of 20 steps from 0.2 up to 1.0 and back.
    *[
        ({"type": "cyclic", "base_lr": 1.0, "min_lr": 0.2, "cycle_steps": 20}, 100, k, expected)
        for k, expected in [(0, 0.2), (5, 0.6), (10, 1.0), (15, 0.6), (20, 0.2), (30, 1.0)]
    ],
    (
        {"type": "cyclic", "base_lr": 1.0, "min_lr": 0.2, "cycle_steps": 20, "mode": "triangular2"},
        100,
        30,
        0.6,
    ),
    (
        {"type": "cyclic", "base_lr": 1.0, "min_lr": 0.2, "cycle_steps": 20, "mode": "triangular2"},
        100,
        50,
        0.4,
    ),
    (
        {
            "type": "cyclic",
            "base_lr": 1.0,
            "min_lr": 0.2,
            "cycle_steps": 20,
            "mode": "exp_range",
            "gamma": 0.9,
        },
        100,
        10,
        0.2 + 0.8 * 0.9**10,
    ),
    # With warmup, the warmup is the first rise: the cycles start at their peak.
    ({"type": "cyclic", "base_lr": 1.0, "min_lr": 0.2, "cycle_steps": 20, "warmup_steps": 10}, 110, 15, 0.6),
    ({"type": "cyclic", "base_lr": 1.0, "min_lr": 0.2, "cycle_steps": 20, "warmup_steps": 10}, 110, 20, 0.2),
    ({"type": "cyclic", "base_lr": 1.0, "min_lr": 0.2, "cycle_steps": 20, "warmup_steps": 10}, 110, 30, 1.0),
    (
        {"type": "one_cycle", "base_lr": 1.0, "min_lr": 0.001, "warmup_steps": 10, "warmup_init_lr": 0.04},
        110,
        5,
        0.52,
    ),
    ({"type": "one_cycle", "base_lr": 1.0, "min_lr": 0.001, "warmup_steps": 10}, 110, 60, 0.5005),
    ({"type": "one_cycle", "base_lr": 1.0, "min_lr": 0.001, "warmup_steps": 10}, 110, 110, 0.001),
    ({"type": "inverse_sqrt", "base_lr": 1.0, "warmup_steps": 100}, 1000, 400, 0.5),
    ({"type": "inverse_sqrt", "base_lr": 1.0, "warmup_steps": 100}, 1000, 100, 1.0),
    ({"type": "inverse_sqrt", "base_lr": 1.0, "warmup_steps": 100, "warmup_init_lr": 0.2}, 1000, 50, 0.6),
    ({"type": "inverse_sqrt", "base_lr": 1.0, "warmup_steps": 100}, 900, 3600, 1 / 3),
    ({"type": "plateau", "base_lr": 0.5}, 100, 99, 0.5),
]


@pytest.mark.parametrize(("spec", "total", "k", "expected"), FORMULAS)
def test_formula_at_chosen_steps(spec: dict[str, Any], total: int, k: int, expected: float) -> None:
    assert lr_at(spec, k, total) == close(expected)


def test_plateau_cuts_closed_form() -> None:
    spec = parse_spec(
        {"type": "plateau", "base_lr": 1.0, "decay_rate": 0.5, "min_lr": 0.1, "warmup_steps": 4}
    )
    assert isinstance(spec, lrtune.schedules.PlateauSchedule)
    assert spec.lr_after_cuts(10, 50, 2) == close(0.25)
    assert spec.lr_after_cuts(10, 50, 9) == close(0.1)  # floored at min_lr
    assert spec.lr_after_cuts(2, 50, 2) == close(spec.lr(2, 50))  # warmup is never cut


def test_every_type_has_a_checked_formula() -> None:
    assert {spec["type"] for spec, *_ in FORMULAS} == set(REGISTRY)


# ------------------------------------------------------------------------ agreement with torch
def torch_optimizer(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=lr, momentum=0.9)


def ours(spec: dict[str, Any], total: int, k_max: int) -> list[float]:
    return [lr_at(spec, k, total) for k in range(k_max + 1)]


def test_matches_steplr() -> None:
    opt = torch_optimizer(0.1)
    expected = lr_sequence(StepLR(opt, step_size=7, gamma=0.5), opt, 50)
    got = ours({"type": "step", "base_lr": 0.1, "decay_rate": 0.5, "decay_steps": 7}, 50, 50)
    assert got == [close(v) for v in expected]


def test_matches_multisteplr() -> None:
    opt = torch_optimizer(0.1)
    expected = lr_sequence(MultiStepLR(opt, milestones=[5, 12, 30], gamma=0.3), opt, 50)
    got = ours({"type": "multistep", "base_lr": 0.1, "decay_rate": 0.3, "milestones": [5, 12, 30]}, 50, 50)
    assert got == [close(v) for v in expected]


def test_matches_exponentiallr_until_total_steps_then_holds() -> None:
    base, low, total = 0.1, 1e-4, 40
    opt = torch_optimizer(base)
    expected = lr_sequence(ExponentialLR(opt, gamma=(low / base) ** (1 / total)), opt, total + 5)
    got = ours({"type": "exponential", "base_lr": base, "min_lr": low}, total, total + 5)
    assert got[: total + 1] == [close(v) for v in expected[: total + 1]]
    assert got[-1] == close(low) and expected[-1] < 0.999 * low  # by design ours holds, torch keeps decaying


def test_matches_cosineannealinglr_until_total_steps_then_holds() -> None:
    base, low, total = 0.1, 1e-3, 40
    opt = torch_optimizer(base)
    expected = lr_sequence(CosineAnnealingLR(opt, T_max=total, eta_min=low), opt, total + 5)
    got = ours({"type": "cosine", "base_lr": base, "min_lr": low}, total, total + 5)
    assert got[: total + 1] == [close(v) for v in expected[: total + 1]]
    assert (
        got[-1] == close(low) and expected[-1] > 1.1 * low
    )  # torch climbs back after T_max; ours never does


@pytest.mark.parametrize("mult", [1, 2, 3])
def test_matches_cosineannealingwarmrestarts(mult: int) -> None:
    opt = torch_optimizer(0.1)
    expected = lr_sequence(CosineAnnealingWarmRestarts(opt, T_0=6, T_mult=mult, eta_min=1e-3), opt, 120)
    spec = {"type": "cosine_restarts", "base_lr": 0.1, "min_lr": 1e-3, "cycle_steps": 6, "cycle_mult": mult}
    assert ours(spec, 120, 120) == [close(v) for v in expected]


@pytest.mark.parametrize(
    ("mode", "gamma", "cycle_steps"),
    [("triangular", 1.0, 10), ("triangular", 1.0, 9), ("triangular2", 1.0, 10), ("exp_range", 0.97, 10)],
)
def test_matches_cycliclr(mode: str, gamma: float, cycle_steps: int) -> None:
    opt = torch_optimizer(1.0)
    settings: dict[str, Any] = {"step_size_up": cycle_steps / 2, "mode": mode, "gamma": gamma}
    torch_sched = CyclicLR(opt, base_lr=0.01, max_lr=0.1, cycle_momentum=False, **settings)
    expected = lr_sequence(torch_sched, opt, 60)
    spec = {
        "type": "cyclic",
        "base_lr": 0.1,
        "min_lr": 0.01,
        "cycle_steps": cycle_steps,
        "mode": mode,
        "gamma": gamma,
    }
    assert ours(spec, 60, 60) == [close(v) for v in expected]


def test_matches_onecyclelr_after_the_rise_and_differs_on_purpose_during_it() -> None:
    """torch's OneCycleLR reaches max_lr after pct_start·total − 1 steps and min_lr after total − 1;
    ours reaches base_lr after warmup_steps and min_lr after total_steps, so torch's total is ours + 1.
    The rise is our linear warmup where torch uses half a cosine: equal at both ends and halfway."""
    base, start, low, warmup, total = 0.1, 0.004, 1e-5, 30, 100
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=base, momentum=0.9)
    torch_sched = OneCycleLR(
        opt,
        max_lr=base,
        total_steps=total + 1,
        pct_start=(warmup + 1) / (total + 1),
        div_factor=base / start,
        final_div_factor=start / low,
        base_momentum=0.85,
        max_momentum=0.95,
    )
    expected_lr, expected_momentum = [opt.param_groups[0]["lr"]], [opt.param_groups[0]["momentum"]]
    for _ in range(total):
        opt.step()
        torch_sched.step()
        expected_lr.append(opt.param_groups[0]["lr"])
        expected_momentum.append(opt.param_groups[0]["momentum"])
    spec = parse_spec(
        {"type": "one_cycle", "base_lr": base, "min_lr": low, "warmup_steps": warmup, "warmup_init_lr": start}
    )
    for k in range(warmup, total + 1):
        assert spec.lr(k, total) == close(expected_lr[k]), k
        assert spec.momentum(k, total) == close(expected_momentum[k]), k
    for k in (0, warmup // 2, warmup):
        assert spec.lr(k, total) == close(expected_lr[k])
        assert spec.momentum(k, total) == close(expected_momentum[k])
    quarter = warmup // 4 * 1.0
    assert spec.lr(warmup // 4, total) == close(start + (base - start) * quarter / warmup)
    cosine_rise = base + (start - base) / 2 * (math.cos(math.pi * quarter / warmup) + 1)
    assert expected_lr[warmup // 4] == close(cosine_rise)
    assert spec.lr(warmup // 4, total) > 1.2 * expected_lr[warmup // 4]


def test_polynomial_is_polynomiallr_lifted_by_min_lr() -> None:
    base, low, total = 0.1, 1e-3, 40
    opt = torch_optimizer(base - low)
    expected = lr_sequence(PolynomialLR(opt, total_iters=total, power=2.0), opt, total + 5)
    got = ours({"type": "polynomial", "base_lr": base, "min_lr": low, "power": 2.0}, total, total + 5)
    assert [value - low for value in got] == [pytest.approx(v, rel=1e-9, abs=1e-12) for v in expected]


def test_matches_linearlr() -> None:
    base, low, total = 0.1, 2e-3, 40
    opt = torch_optimizer(base)
    expected = lr_sequence(
        LinearLR(opt, start_factor=1.0, end_factor=low / base, total_iters=total), opt, total + 5
    )
    assert ours({"type": "linear", "base_lr": base, "min_lr": low}, total, total + 5) == [
        close(v) for v in expected
    ]


# ------------------------------------------------------------------------------ a floor of zero
def test_cosine_to_zero_matches_cosineannealinglr_with_eta_min_zero() -> None:
    base, total = 0.1, 40
    opt = torch_optimizer(base)
    expected = lr_sequence(CosineAnnealingLR(opt, T_max=total), opt, total)  # eta_min defaults to 0
    got = ours({"type": "cosine", "base_lr": base, "min_lr": 0}, total, total + 5)
    assert got[: total + 1] == [close(v) for v in expected]
    assert got[total:] == [0.0] * 6  # reaches exactly 0 and holds it
    halfway = 0.5 * base * (1 + math.cos(math.pi * 10 / total))
    assert got[10] == close(halfway)


@pytest.mark.parametrize("mult", [1, 2])
def test_restarts_to_zero_match_cosineannealingwarmrestarts(mult: int) -> None:
    opt = torch_optimizer(0.1)
    expected = lr_sequence(CosineAnnealingWarmRestarts(opt, T_0=6, T_mult=mult, eta_min=0.0), opt, 60)
    spec = {"type": "cosine_restarts", "base_lr": 0.1, "min_lr": 0, "cycle_steps": 6, "cycle_mult": mult}
    assert ours(spec, 60, 60) == [close(v) for v in expected]


def test_linear_and_polynomial_to_zero_match_torch() -> None:
    base, total = 0.1, 40
    opt = torch_optimizer(base)
    linear = lr_sequence(LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=total), opt, total)
    assert ours({"type": "linear", "base_lr": base, "min_lr": 0}, total, total) == [close(v) for v in linear]
    opt = torch_optimizer(base)
    poly = lr_sequence(PolynomialLR(opt, total_iters=total, power=2.0), opt, total)
    got = ours({"type": "polynomial", "base_lr": base, "min_lr": 0.0, "power": 2.0}, total, total)
    assert got == [close(v) for v in poly]
    assert got[-1] == 0.0


def test_cyclic_from_zero_matches_cycliclr() -> None:
    opt = torch_optimizer(1.0)
    torch_sched = CyclicLR(opt, base_lr=0.0, max_lr=0.1, step_size_up=5, cycle_momentum=False)
    expected = lr_sequence(torch_sched, opt, 40)
    assert ours({"type": "cyclic", "base_lr": 0.1, "min_lr": 0, "cycle_steps": 10}, 40, 40) == [
        close(v) for v in expected
    ]


def test_one_cycle_to_zero_ends_at_zero() -> None:
    spec = parse_spec({"type": "one_cycle", "base_lr": 0.1, "min_lr": 0, "warmup_steps": 10})
    assert spec.lr(10, 110) == close(0.1)
    assert spec.lr(60, 110) == close(0.05)
    assert spec.lr(110, 110) == 0.0


def test_plateau_with_a_zero_floor_matches_reducelronplateau() -> None:
    losses = [1.0] + [0.9] * 20
    torch_opt = torch_optimizer(0.1)
    torch_sched = ReduceLROnPlateau(torch_opt, mode="min", factor=0.5, patience=1, min_lr=0.0)
    _, opt = fresh_optimizer()
    sched = build(
        {"type": "plateau", "base_lr": 0.1, "decay_rate": 0.5, "patience": 1, "min_lr": 0}, opt, 100
    )
    for loss in losses:
        torch_sched.step(loss)
        sched.step(loss)
        assert opt.param_groups[0]["lr"] == close(torch_opt.param_groups[0]["lr"])
    assert 0.0 < opt.param_groups[0]["lr"] < 0.1 * 0.5**8  # cut again and again, never to 0


def test_built_cosine_to_zero_ends_at_zero_and_resumes() -> None:
    spec = {"type": "cosine", "base_lr": 0.1, "min_lr": 0, "warmup_steps": 5}
    _, opt = fresh_optimizer()
    sched = build(spec, opt, 30)
    for _ in range(20):
        opt.step()
        sched.step()
    _, opt2 = fresh_optimizer()
    resumed = build(spec, opt2, 30)
    resumed.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    for _ in range(10):
        opt.step()
        sched.step()
    assert sched.get_last_lr() == [0.0]
    assert parse_spec(spec).to_dict()["min_lr"] == 0.0


def test_exponential_refuses_a_zero_floor_in_one_line() -> None:
    with pytest.raises(UsageError) as info:
        parse_spec({"type": "exponential", "base_lr": 0.1, "min_lr": 0})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("schedule 'exponential': min_lr must be > 0")
    assert "min_lr=0" in message


def test_matches_reducelronplateau() -> None:
    losses = [1.0, 0.9, 0.9, 0.95, 0.9, 0.91, 0.8, 0.8, 0.79995, float("nan"), 0.8, 0.8, 0.7]
    losses += [0.7] * 20
    torch_opt = torch_optimizer(0.1)
    torch_sched = ReduceLROnPlateau(
        torch_opt, mode="min", factor=0.5, patience=2, threshold=1e-4, min_lr=1e-3
    )
    _, opt = fresh_optimizer()
    sched = build(
        {"type": "plateau", "base_lr": 0.1, "decay_rate": 0.5, "patience": 2, "min_lr": 1e-3}, opt, 100
    )
    for loss in losses:
        torch_sched.step(loss)
        sched.step(loss)
        assert opt.param_groups[0]["lr"] == close(torch_opt.param_groups[0]["lr"])
    assert torch_opt.param_groups[0]["lr"] == close(1e-3)  # the sequence reached the floor


def test_plateau_counts_optimizer_steps_for_warmup_and_ignores_stalls_during_it() -> None:
    _, opt = fresh_optimizer()
    spec = {"type": "plateau", "base_lr": 0.1, "patience": 0, "warmup_steps": 10, "warmup_init_lr": 0.01}
    sched = build(spec, opt, 100)
    for step in range(4):
        opt.step()
        assert opt.param_groups[0]["lr"] == close(0.01 + 0.09 * (step + 1) / 10)
    for _ in range(3):
        sched.step(1.0)  # stalls during warmup do not count
    assert opt.param_groups[0]["lr"] == close(0.01 + 0.09 * 4 / 10)
    for _ in range(6):
        opt.step()
    assert opt.param_groups[0]["lr"] == close(0.1)
    sched.step(1.0)
    assert opt.param_groups[0]["lr"] == close(0.01)  # patience 0: the first stalled epoch cuts
    with pytest.raises(UsageError, match="validation loss"):
        sched.step()


# ----------------------------------------------------------------------------------- momentum
def one_cycle(**extra: Any) -> dict[str, Any]:
    return {"type": "one_cycle", "base_lr": 0.1, "min_lr": 1e-4, "warmup_steps": 10, **extra}


def test_one_cycle_cycles_sgd_momentum_inversely_to_the_lr() -> None:
    model = torch.nn.Linear(2, 2)
    groups: list[dict[str, Any]] = [{"params": [model.weight]}, {"params": [model.bias], "lr": 0.5}]
    opt = torch.optim.SGD(groups, lr=1.0, momentum=0.9)
    sched = build(one_cycle(), opt, 110)
    seen = [[group["momentum"] for group in opt.param_groups]]
    for _ in range(115):
        opt.step()
        sched.step()
        seen.append([group["momentum"] for group in opt.param_groups])
    assert seen[0] == [0.95, 0.95]
    assert seen[5] == [close(0.9), close(0.9)]
    assert seen[10] == [close(0.85), close(0.85)]
    assert seen[60] == [close(0.9), close(0.9)]
    assert seen[110] == [close(0.95), close(0.95)] and seen[115] == seen[110]


def test_one_cycle_cycles_adam_beta1_only() -> None:
    opt = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=1.0, betas=(0.9, 0.99))
    sched = build(one_cycle(max_momentum=0.9, base_momentum=0.8), opt, 110)
    assert opt.param_groups[0]["betas"] == (0.9, 0.99)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["betas"] == (close(0.8), 0.99)


def test_one_cycle_leaves_momentum_alone_when_asked_or_absent() -> None:
    opt = torch_optimizer(1.0)
    sched = build(one_cycle(cycle_momentum=False), opt, 110)
    plain = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    plain_sched = build(one_cycle(), plain, 110)
    adagrad = torch.optim.Adagrad(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    adagrad_sched = build(one_cycle(), adagrad, 110)
    for sched_, opt_ in ((sched, opt), (plain_sched, plain), (adagrad_sched, adagrad)):
        for _ in range(20):
            opt_.step()
            sched_.step()
    assert opt.param_groups[0]["momentum"] == 0.9
    assert plain.param_groups[0]["momentum"] == 0  # SGD without momentum is not given any
    assert "momentum" not in adagrad.param_groups[0] and "betas" not in adagrad.param_groups[0]


# --------------------------------------------------------------------------------- LR dropout
def sgd_layer(seed: int = 0) -> tuple[torch.nn.Linear, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    layer = torch.nn.Linear(64, 64)
    return layer, torch.optim.SGD(layer.parameters(), lr=0.1)


def backward(layer: torch.nn.Linear, step: int) -> None:
    data = torch.Generator().manual_seed(step)
    layer.zero_grad()
    layer(torch.randn(16, 64, generator=data)).pow(2).mean().backward()


def grad(param: torch.Tensor) -> torch.Tensor:
    assert param.grad is not None
    return param.grad


def flat(layer: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in layer.parameters()])


def test_lr_dropout_of_one_is_exactly_a_no_op() -> None:
    layer, opt = sgd_layer()
    sched = build({"type": "constant", "base_lr": 0.1, "lr_dropout": 1.0}, opt, 10)
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    reference, ref_opt = sgd_layer()
    for step in range(5):
        backward(layer, step)
        opt.step()
        sched.step()
        backward(reference, step)
        ref_opt.step()
    assert torch.equal(flat(layer), flat(reference))


def test_lr_dropout_keeps_about_half_the_updates_and_freezes_the_rest() -> None:
    layer, opt = sgd_layer()
    rng_before = torch.get_rng_state()
    sched = build({"type": "constant", "base_lr": 0.1, "lr_dropout": 0.5}, opt, 10, seed=3)
    for step in range(5):
        backward(layer, step)
        before = flat(layer)
        full_step = torch.cat(
            [torch.add(p.detach(), grad(p), alpha=-0.1).reshape(-1) for p in layer.parameters()]
        )
        opt.step()
        sched.step()
        after = flat(layer)
        changed = after != before
        assert 0.45 < changed.float().mean().item() < 0.55
        assert torch.equal(after[changed], full_step[changed])  # kept coordinates took the full update
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is never used


def test_lr_dropout_masks_depend_on_the_seed_only() -> None:
    def masks(seed: int) -> torch.Tensor:
        layer, opt = sgd_layer()
        sched = build({"type": "constant", "base_lr": 0.1, "lr_dropout": 0.5}, opt, 10, seed=seed)
        before = flat(layer)
        backward(layer, 0)
        opt.step()
        sched.close()
        return flat(layer) != before

    assert torch.equal(masks(1), masks(1))
    assert not torch.equal(masks(1), masks(2))


def test_lr_dropout_hooks_go_with_close_and_with_the_scheduler() -> None:
    layer, opt = sgd_layer()
    sched = build({"type": "cosine", "base_lr": 0.1, "lr_dropout": 0.5}, opt, 10)
    assert len(opt._optimizer_step_pre_hooks) == 1
    sched.close()
    sched.close()
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    backward(layer, 0)
    before = flat(layer)
    opt.step()
    assert (flat(layer) != before).float().mean().item() > 0.99

    sched = build({"type": "plateau", "base_lr": 0.1, "lr_dropout": 0.5, "warmup_steps": 2}, opt, 10)
    assert len(opt._optimizer_step_post_hooks) == 2
    del sched
    gc.collect()
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


# --------------------------------------------------------------------------------- validation
def test_usage_error_is_a_value_error_with_exit_code_2() -> None:
    with pytest.raises(ValueError) as info:
        parse_spec({"type": "nope", "base_lr": 0.1})
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_unknown_type_lists_the_known_ones() -> None:
    with pytest.raises(
        UsageError, match="unknown schedule type 'warm_cosine'; choose one of: constant, step"
    ) as info:
        parse_spec({"type": "warm_cosine", "base_lr": 0.1})
    assert all(name in str(info.value) for name in REGISTRY)
    with pytest.raises(UsageError, match="has no 'type'"):
        parse_spec({"base_lr": 0.1})


def test_unknown_key_lists_the_keys_of_the_type() -> None:
    with pytest.raises(UsageError) as info:
        parse_spec({"type": "cosine", "base_lr": 0.1, "foo": 1})
    assert str(info.value) == (
        "unknown key 'foo' for schedule 'cosine'; its keys are: "
        "base_lr, min_lr, warmup_steps, warmup_init_lr, lr_dropout"
    )


def test_missing_required_key_is_named() -> None:
    with pytest.raises(UsageError, match="schedule 'step' needs the key 'decay_steps'"):
        parse_spec({"type": "step", "base_lr": 0.1})
    with pytest.raises(UsageError, match="needs the key 'base_lr'"):
        parse_spec({"type": "constant"})
    with pytest.raises(UsageError, match="must be a mapping"):
        parse_spec([("type", "constant")])  # type: ignore[arg-type]


BAD_SPECS: list[tuple[dict[str, Any], str]] = [
    ({"type": "constant", "base_lr": 0}, "base_lr=0"),
    ({"type": "constant", "base_lr": -0.1}, "base_lr=-0.1"),
    ({"type": "constant", "base_lr": float("nan")}, "base_lr=nan"),
    ({"type": "constant", "base_lr": float("inf")}, "base_lr=inf"),
    ({"type": "constant", "base_lr": "0.1"}, "must be a number"),
    ({"type": "constant", "base_lr": True}, "must be a number"),
    ({"type": "cosine", "base_lr": 0.1, "min_lr": 0.2}, "min_lr=0.2, base_lr=0.1"),
    ({"type": "cosine", "base_lr": 0.1, "min_lr": -0.001}, "min_lr=-0.001"),
    ({"type": "exponential", "base_lr": 0.1, "min_lr": 0}, "min_lr=0"),
    ({"type": "exponential", "base_lr": 0.1, "min_lr": 0.0}, "min_lr=0.0"),
    ({"type": "cosine", "base_lr": 0.1, "warmup_steps": -1}, "warmup_steps=-1"),
    ({"type": "cosine", "base_lr": 0.1, "warmup_steps": 2.5}, "warmup_steps=2.5"),
    ({"type": "cosine", "base_lr": 0.1, "warmup_init_lr": 0.5}, "warmup_init_lr=0.5"),
    ({"type": "cosine", "base_lr": 0.1, "warmup_init_lr": 0}, "warmup_init_lr=0"),
    ({"type": "cosine", "base_lr": 0.1, "lr_dropout": 0}, "lr_dropout=0"),
    ({"type": "cosine", "base_lr": 0.1, "lr_dropout": 1.5}, "lr_dropout=1.5"),
    ({"type": "step", "base_lr": 0.1, "decay_steps": 10, "decay_rate": 0}, "decay_rate=0"),
    ({"type": "step", "base_lr": 0.1, "decay_steps": 10, "decay_rate": 1.5}, "decay_rate=1.5"),
    ({"type": "step", "base_lr": 0.1, "decay_steps": 0}, "decay_steps=0"),
    ({"type": "multistep", "base_lr": 0.1, "milestones": [10, 5]}, "increasing"),
    ({"type": "multistep", "base_lr": 0.1, "milestones": []}, "non-empty"),
    ({"type": "multistep", "base_lr": 0.1, "milestones": [0, 5]}, ">= 1"),
    ({"type": "polynomial", "base_lr": 0.1, "power": 0}, "power=0"),
    ({"type": "cosine_restarts", "base_lr": 0.1, "cycle_steps": 1}, "cycle_steps=1"),
    ({"type": "cosine_restarts", "base_lr": 0.1, "cycle_steps": 10, "cycle_mult": 0.5}, "cycle_mult=0.5"),
    ({"type": "cosine_restarts", "base_lr": 0.1, "cycle_steps": 10, "cycle_decay": 0}, "cycle_decay=0"),
    ({"type": "cyclic", "base_lr": 0.1, "cycle_steps": 1}, "cycle_steps=1"),
    ({"type": "cyclic", "base_lr": 0.1, "cycle_steps": 10, "mode": "sawtooth"}, "mode='sawtooth'"),
    ({"type": "cyclic", "base_lr": 0.1, "cycle_steps": 10, "gamma": 0}, "gamma=0"),
    ({"type": "one_cycle", "base_lr": 0.1, "cycle_momentum": "yes"}, "cycle_momentum='yes'"),
    ({"type": "one_cycle", "base_lr": 0.1, "base_momentum": 0.99}, "base_momentum=0.99"),
    ({"type": "one_cycle", "base_lr": 0.1, "max_momentum": 1.0}, "max_momentum=1.0"),
    ({"type": "inverse_sqrt", "base_lr": 0.1, "warmup_steps": 0}, "warmup_steps=0"),
    ({"type": "plateau", "base_lr": 0.1, "patience": -1}, "patience=-1"),
    ({"type": "plateau", "base_lr": 0.1, "decay_rate": 2}, "decay_rate=2"),
]


@pytest.mark.parametrize(("spec", "fragment"), BAD_SPECS)
def test_bad_values_are_usage_errors(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_spec(spec)
    assert fragment in str(info.value)
    assert f"schedule {spec['type']!r}" in str(info.value)


@pytest.mark.parametrize("total", [0, -5, True, 2.5, "10", None])
def test_bad_total_steps_are_usage_errors(total: Any) -> None:
    _, opt = fresh_optimizer()
    with pytest.raises(UsageError, match="total_steps"):
        build({"type": "constant", "base_lr": 0.1}, opt, total)
    with pytest.raises(UsageError, match="total_steps"):
        lr_at({"type": "constant", "base_lr": 0.1}, 0, total)


def test_total_steps_must_exceed_warmup() -> None:
    _, opt = fresh_optimizer()
    spec = {"type": "cosine", "base_lr": 0.1, "warmup_steps": 10}
    with pytest.raises(UsageError, match="total_steps=10, warmup_steps=10"):
        build(spec, opt, 10)
    assert build(spec, opt, 11).get_last_lr() == [0.001]
    with pytest.raises(UsageError, match="step index"):
        lr_at(spec, -1, 11)


def test_only_plateau_takes_a_value_in_step() -> None:
    _, opt = fresh_optimizer()
    sched = build(EXAMPLES["cosine"], opt, TOTAL)
    with pytest.raises(UsageError, match="only 'plateau' takes the validation loss"):
        sched.step(0.5)
    assert sched.last_epoch == 0


@pytest.mark.parametrize("total", [8, 9, 1000])
def test_examples_fit_their_budget(total: int) -> None:
    specs = examples(total)
    assert list(specs) == NAMES
    assert all(spec.lr(total, total) > 0 for spec in specs.values())


def test_build_rejects_a_first_group_without_lr_and_non_optimizers() -> None:
    with pytest.raises(UsageError, match="first param group"):
        build({"type": "constant", "base_lr": 0.1}, torch_optimizer(0.0), 10)
    with pytest.raises(UsageError, match="torch optimizer"):
        build({"type": "constant", "base_lr": 0.1}, object(), 10)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ files, catalogue
def test_load_schedule_from_a_best_file_and_a_bare_spec(tmp_path: Path) -> None:
    spec = {"type": "cosine", "base_lr": 0.1, "min_lr": 0.001, "warmup_steps": 100}
    best = tmp_path / "best.json"
    best.write_text(
        json.dumps({"schedule": spec, "optimizer": {"name": "sgd", "momentum": 0.9}, "epochs": 5})
    )
    bare = tmp_path / "spec.json"
    bare.write_text(json.dumps(spec))
    assert load_schedule(best) == spec
    assert load_schedule(str(bare)) == spec
    assert lrtune.load_schedule(best) == spec


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "not found"),
        ("{not json", "not valid JSON"),
        ('{"optimizer": {"name": "sgd"}}', "holds no schedule"),
        ("[1, 2]", "holds no schedule"),
        ('{"schedule": {"type": "cosine", "base_lr": -1}}', "base_lr=-1"),
    ],
)
def test_load_schedule_errors(tmp_path: Path, content: str | None, fragment: str) -> None:
    path = tmp_path / "best.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=fragment) as info:
        load_schedule(path)
    assert str(path) in str(info.value)


def test_catalogue_covers_every_type_with_its_keys() -> None:
    entries = {entry.type_name: entry for entry in catalogue()}
    assert list(entries) == list(REGISTRY)
    for name, cls in REGISTRY.items():
        assert tuple(key for key, _ in entries[name].keys) == cls.own_keys()
        assert entries[name].formula
    assert dict(entries["cosine_restarts"].keys) == {
        "min_lr": "base_lr/1000",
        "cycle_steps": "required",
        "cycle_mult": "1.0",
        "cycle_decay": "1.0",
    }
    assert dict(entries["inverse_sqrt"].keys) == {"warmup_steps": "required"}
    text = describe()
    for entry in entries.values():
        assert entry.type_name in text and entry.formula in text
    assert "warmup_init_lr=base_lr/100" in text


def test_public_api_exports() -> None:
    assert lrtune.build_schedule is build
    assert lrtune.ScheduleSpec is ScheduleSpec
    assert all(issubclass(cls, ScheduleSpec) for cls in REGISTRY.values())


def test_plot_schedules_writes_one_figure(tmp_path: Path) -> None:
    specs: dict[str, Any] = {name: examples(200)[name] for name in ("step", "cyclic", "one_cycle", "plateau")}
    specs["my cosine"] = {"type": "cosine", "base_lr": 0.1, "warmup_steps": 20}
    out = tmp_path / "figures" / "schedules.png"
    plot_schedules(specs, 200, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(UsageError, match="at least one"):
        plot_schedules({}, 200, tmp_path / "empty.png")
    with pytest.raises(UsageError, match="total_steps"):
        plot_schedules(specs, 10, tmp_path / "short.png")
    assert not (tmp_path / "empty.png").exists() and not (tmp_path / "short.png").exists()
