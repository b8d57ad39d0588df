"""Tests of the study's search space: valid specs, conditional params, exact replay, baseline."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest

from lrtune.errors import UsageError
from lrtune.schedules import REGISTRY, parse_spec
from lrtune.space import (
    CYCLIC_MODES,
    SEARCHABLE_TYPES,
    LRBounds,
    SearchSpace,
    TrialPlan,
    baseline_params,
    longest_warmup_steps,
    plan_from_params,
    sample,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

BOUNDS = LRBounds(lr_low=0.003, lr_high=0.3, suggested_lr=0.03)

#: Spec keys (besides type and base_lr) and trial params (besides schedule and base_lr) per type.
SPEC_KEYS: dict[str, set[str]] = {
    "constant": {"warmup_steps"},
    "step": {"warmup_steps", "decay_rate", "decay_steps"},
    "multistep": {"warmup_steps", "decay_rate", "milestones"},
    "exponential": {"warmup_steps", "min_lr"},
    "linear": {"warmup_steps", "min_lr"},
    "polynomial": {"warmup_steps", "min_lr", "power"},
    "cosine": {"warmup_steps", "min_lr"},
    "cosine_restarts": {"warmup_steps", "min_lr", "cycle_steps", "cycle_mult"},
    "cyclic": {"min_lr", "cycle_steps", "mode"},
    "one_cycle": {"warmup_steps", "min_lr"},
    "inverse_sqrt": {"warmup_steps"},
    "plateau": {"warmup_steps", "decay_rate", "patience"},
}
PARAMS: dict[str, set[str]] = {
    "constant": {"warmup_frac"},
    "step": {"warmup_frac", "decay_rate", "decay_interval_frac"},
    "multistep": {"warmup_frac", "decay_rate", "milestones_first", "milestones_count"},
    "exponential": {"warmup_frac", "min_lr_ratio"},
    "linear": {"warmup_frac", "min_lr_ratio"},
    "polynomial": {"warmup_frac", "min_lr_ratio", "power"},
    "cosine": {"warmup_frac", "min_lr_ratio"},
    "cosine_restarts": {"warmup_frac", "min_lr_ratio", "n_cycles", "cycle_mult"},
    "cyclic": {"min_lr_ratio", "n_cycles", "cyclic_mode"},
    "one_cycle": {"min_lr_ratio", "rise_frac"},
    "inverse_sqrt": {"inverse_sqrt_warmup_frac"},
    "plateau": {"warmup_frac", "decay_rate", "patience"},
}


def make_space(schedules: tuple[str, ...] = SEARCHABLE_TYPES, **kwargs: Any) -> SearchSpace:
    return SearchSpace(bounds={"sgd": BOUNDS}, schedules=schedules, **kwargs)


def random_study(seed: int = 0, **kwargs: Any) -> optuna.Study:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed), **kwargs)


def test_every_registered_type_is_searchable() -> None:
    assert set(SEARCHABLE_TYPES) == set(REGISTRY)
    assert set(PARAMS) == set(SEARCHABLE_TYPES)


def test_cyclic_modes_match_the_schedule() -> None:
    from lrtune.schedules import CYCLIC_MODES as SCHEDULE_MODES

    assert tuple(CYCLIC_MODES) == tuple(SCHEDULE_MODES)


@pytest.mark.parametrize("schedule", SEARCHABLE_TYPES)
@pytest.mark.parametrize("total_steps", [2, 3, 10, 97, 5000])
def test_every_plan_is_a_valid_spec_with_only_its_own_keys(schedule: str, total_steps: int) -> None:
    space = make_space((schedule,))
    study = random_study(seed=total_steps)
    for _ in range(40):
        trial = study.ask()
        plan = sample(trial, space, total_steps=total_steps, steps_per_epoch=max(1, total_steps // 10))
        spec = plan.schedule
        assert spec["type"] == schedule
        parsed = parse_spec(spec)
        parsed.check_budget(total_steps)
        assert BOUNDS.lr_low <= spec["base_lr"] <= BOUNDS.lr_high
        assert spec["base_lr"] == trial.params["base_lr"]
        expected_keys = SPEC_KEYS[schedule] | ({"gamma"} if spec.get("mode") == "exp_range" else set())
        assert set(spec) - {"type", "base_lr"} == expected_keys
        expected_params = PARAMS[schedule] | (
            {"exp_range_final_scale"} if spec.get("mode") == "exp_range" else set()
        )
        assert set(trial.params) == {"schedule", "base_lr"} | expected_params
        assert spec.get("warmup_steps", 0) < total_steps
        assert spec.get("min_lr", 0.0) <= spec["base_lr"]
        assert spec.get("cycle_steps", 2) >= 2
        # The peak LR is never exceeded and the LR stays positive over the whole run.
        for k in sorted({0, 1, total_steps // 3, total_steps // 2, total_steps - 1, total_steps}):
            lr = parsed.lr(k, total_steps)
            assert 0 < lr <= spec["base_lr"] * (1 + 1e-12)
        study.tell(trial, 0.0)


def test_conditional_params_and_shared_distributions() -> None:
    space = make_space()
    study = random_study(seed=1)
    seen: dict[str, set[str]] = {}
    distributions: dict[str, set[str]] = {}
    for _ in range(300):
        trial = study.ask()
        plan = sample(trial, space, total_steps=1000, steps_per_epoch=100)
        schedule = plan.schedule["type"]
        for name, distribution in trial.distributions.items():
            seen.setdefault(name, set()).add(schedule)
            distributions.setdefault(name, set()).add(repr(distribution))
        if schedule == "cosine":
            assert "decay_rate" not in trial.params and "decay_rate" not in plan.schedule
        study.tell(trial, 0.0)
    assert seen["min_lr_ratio"] == {name for name, params in PARAMS.items() if "min_lr_ratio" in params}
    assert seen["decay_rate"] == {"step", "multistep", "plateau"}
    assert seen["n_cycles"] == {"cosine_restarts", "cyclic"}
    assert len(seen["warmup_frac"]) == 9
    for name, reprs in distributions.items():
        assert len(reprs) == 1, f"{name} has several distributions: {reprs}"


def test_fractions_become_steps() -> None:
    def plan(schedule: str, **params: Any) -> dict[str, Any]:
        fixed = {"schedule": schedule, "base_lr": 0.1, **params}
        return plan_from_params(fixed, make_space(), total_steps=1000, steps_per_epoch=100).schedule

    assert plan("step", warmup_frac=0.1, decay_rate=0.5, decay_interval_frac=0.25) == {
        "type": "step",
        "base_lr": 0.1,
        "decay_rate": 0.5,
        "decay_steps": 225,  # a quarter of the 900 steps after warmup
        "warmup_steps": 100,
    }
    spec = plan("multistep", warmup_frac=0.0, decay_rate=0.1, milestones_first=0.5, milestones_count=2)
    assert spec["milestones"] == [500, 750]
    spec = plan("cosine_restarts", warmup_frac=0.15, min_lr_ratio=0.01, n_cycles=3, cycle_mult=2)
    assert spec["warmup_steps"] == 150 and spec["cycle_steps"] == round(850 / 7)
    spec = plan("cosine_restarts", warmup_frac=0.0, min_lr_ratio=0.01, n_cycles=4, cycle_mult=1)
    assert spec["cycle_steps"] == 250 and spec["min_lr"] == pytest.approx(0.001)
    spec = plan("cyclic", min_lr_ratio=0.1, n_cycles=4, cyclic_mode="exp_range", exp_range_final_scale=0.1)
    assert spec["cycle_steps"] == 250
    assert spec["gamma"] ** 1000 == pytest.approx(0.1)
    assert plan("one_cycle", min_lr_ratio=0.01, rise_frac=0.3)["warmup_steps"] == 300
    assert plan("inverse_sqrt", inverse_sqrt_warmup_frac=0.05)["warmup_steps"] == 50
    assert plan("plateau", warmup_frac=0.0, decay_rate=0.5, patience=2)["patience"] == 2  # epochs


def test_plan_from_params_reproduces_sampled_plans(tmp_path: Path) -> None:
    space = SearchSpace(
        bounds={"sgd": BOUNDS, "adam": LRBounds(1e-4, 1e-2, 1e-3)},
        schedules=SEARCHABLE_TYPES,
        optimizers=("sgd", "adam"),
        weight_decay=(1e-5, 1e-2),
        lr_dropout=True,
    )
    study = random_study(seed=2)
    for _ in range(100):
        trial = study.ask()
        plan = sample(trial, space, total_steps=777, steps_per_epoch=77)
        assert plan_from_params(trial.params, space, total_steps=777, steps_per_epoch=77) == plan
        study.tell(trial, 0.0)
    # Also after a round trip through an RDB storage (ints and categoricals come back typed).
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    stored = random_study(seed=5, storage=storage, study_name="replay")
    plans: dict[int, TrialPlan] = {}
    for _ in range(8):
        trial = stored.ask()
        plans[trial.number] = sample(trial, space, total_steps=777, steps_per_epoch=77)
        stored.tell(trial, 0.0)
    for frozen in optuna.load_study(storage=storage, study_name="replay").trials:
        replayed = plan_from_params(frozen.params, space, total_steps=777, steps_per_epoch=77)
        assert replayed == plans[frozen.number]
        assert json.loads(json.dumps(replayed.to_dict())) == plans[frozen.number].to_dict()


def test_plan_from_params_errors() -> None:
    space = make_space(("cosine",))
    with pytest.raises(UsageError, match="min_lr_ratio"):
        plan_from_params(
            {"schedule": "cosine", "base_lr": 0.1, "warmup_frac": 0.0},
            space,
            total_steps=100,
            steps_per_epoch=10,
        )
    with pytest.raises(UsageError, match="do not fit"):
        plan_from_params({"schedule": "step", "base_lr": 0.1}, space, total_steps=100, steps_per_epoch=10)
    with pytest.raises(UsageError, match="total_steps"):
        plan_from_params(baseline_params(space), space, total_steps=1, steps_per_epoch=1)


@pytest.mark.parametrize(
    ("schedules", "expected"),
    [
        (SEARCHABLE_TYPES, "cosine"),
        (("step", "cosine"), "cosine"),
        (("constant", "linear"), "linear"),
        (("step", "constant"), "constant"),
        (("plateau", "step"), "plateau"),
    ],
)
def test_baseline_round_trips_through_enqueue(schedules: tuple[str, ...], expected: str) -> None:
    space = make_space(schedules)
    params = baseline_params(space)
    assert params["schedule"] == expected and params["base_lr"] == BOUNDS.suggested_lr
    study = random_study()
    study.enqueue_trial(params)
    trial = study.ask()
    plan = sample(trial, space, total_steps=500, steps_per_epoch=50)
    assert trial.params == params  # every param the trial drew came from the baseline
    assert plan.schedule["base_lr"] == BOUNDS.suggested_lr
    assert plan.schedule["warmup_steps"] == 0
    parse_spec(plan.schedule).check_budget(500)


@pytest.mark.parametrize("schedule", SEARCHABLE_TYPES)
def test_baseline_of_each_type_is_complete_and_valid(schedule: str) -> None:
    space = make_space((schedule,), weight_decay=(1e-4, 1e-2), lr_dropout=True)
    params = baseline_params(space)
    trial = optuna.trial.FixedTrial(params)
    plan = sample(trial, space, total_steps=20, steps_per_epoch=2)
    assert trial.params == params
    assert plan.schedule.get("min_lr", 1e-3 * BOUNDS.suggested_lr) == pytest.approx(
        1e-3 * BOUNDS.suggested_lr
    )
    assert plan.schedule["lr_dropout"] == 1.0
    assert plan.optimizer.torch_kwargs()["weight_decay"] == pytest.approx(1e-3)
    parse_spec(plan.schedule).check_budget(20)


def test_optimizer_search_uses_each_optimizers_bounds() -> None:
    bounds = {
        "sgd": LRBounds(0.01, 1.0, 0.1),
        "adam": LRBounds(1e-4, 1e-3, 3e-4),
        "adamw": LRBounds(2e-4, 2e-3, 1e-3),
    }
    space = SearchSpace(
        bounds=bounds,
        schedules=("cosine", "one_cycle"),
        optimizers=("sgd", "adam", "adamw"),
        weight_decay=(1e-5, 1e-2),
    )
    study = random_study(seed=3)
    chosen = set()
    for _ in range(60):
        trial = study.ask()
        plan = sample(trial, space, total_steps=100, steps_per_epoch=10)
        name = plan.optimizer.name
        chosen.add(name)
        assert trial.params["optimizer"] == name
        assert [key for key in trial.params if key.startswith("base_lr")] == [f"base_lr_{name}"]
        assert bounds[name].lr_low <= plan.schedule["base_lr"] <= bounds[name].lr_high
        assert plan.schedule["base_lr"] == trial.params[f"base_lr_{name}"]
        assert 1e-5 <= plan.optimizer.kwargs["weight_decay"] <= 1e-2
        assert plan.to_dict()["optimizer"]["name"] == name
        study.tell(trial, 0.0)
    assert chosen == {"sgd", "adam", "adamw"}
    assert baseline_params(space, optimizer="adam")["base_lr_adam"] == 3e-4


def test_fixed_optimizer_is_not_a_param() -> None:
    study = random_study()
    trial = study.ask()
    plan = sample(trial, make_space(("constant",), lr_dropout=True), total_steps=50, steps_per_epoch=5)
    assert "optimizer" not in trial.params and "weight_decay" not in trial.params
    assert plan.to_dict()["optimizer"] == {"name": "sgd", "momentum": 0.9}
    assert 0.5 <= plan.schedule["lr_dropout"] == trial.params["lr_dropout"] <= 1.0


def test_no_warmup_when_the_fraction_is_zero() -> None:
    space = make_space(("cosine", "plateau"), warmup_max_fraction=0.0)
    study = random_study()
    for _ in range(10):
        trial = study.ask()
        plan = sample(trial, space, total_steps=100, steps_per_epoch=10)
        assert plan.schedule["warmup_steps"] == 0 and "warmup_frac" not in trial.params
        study.tell(trial, 0.0)
    assert longest_warmup_steps(space, total_steps=100) == 0


def test_longest_warmup_bounds_every_sampled_rise() -> None:
    assert longest_warmup_steps(make_space(("cosine",)), total_steps=1000) == 200
    assert longest_warmup_steps(make_space(("cosine", "inverse_sqrt")), total_steps=1000) == 250
    assert longest_warmup_steps(make_space(("cosine", "one_cycle")), total_steps=1000) == 400
    assert (
        longest_warmup_steps(make_space(("cyclic", "step"), warmup_max_fraction=0.1), total_steps=1000) == 100
    )
    assert longest_warmup_steps(make_space(("cyclic",)), total_steps=1000) == 0
    space = make_space()
    longest = longest_warmup_steps(space, total_steps=300)
    study = random_study(seed=4)
    rises = []
    for _ in range(200):
        trial = study.ask()
        rises.append(
            sample(trial, space, total_steps=300, steps_per_epoch=30).schedule.get("warmup_steps", 0)
        )
        study.tell(trial, 0.0)
    assert max(rises) <= longest and max(rises) > longest * 0.8


def test_tpe_sampler_runs_the_conditional_space() -> None:
    from lrtune.config import make_sampler

    space = make_space()
    study = optuna.create_study(sampler=make_sampler("tpe", seed=0))
    study.enqueue_trial(baseline_params(space))

    def objective(trial: optuna.Trial) -> float:
        plan = sample(trial, space, total_steps=100, steps_per_epoch=10)
        return abs(math.log10(plan.schedule["base_lr"] / 0.05))

    study.optimize(objective, n_trials=15)
    assert len(study.trials) == 15 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.trials[0].params == baseline_params(space)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"schedules": ("cosine", "warp")}, r"unknown schedule type 'warp'.*choose from: constant, step"),
        ({"schedules": ()}, "schedules must not be empty"),
        ({"schedules": "cosine"}, "must be a list"),
        ({"schedules": ("cosine", "cosine")}, "repeat"),
        ({"optimizers": ("sgd", "lion")}, r"unknown optimizer 'lion'.*sgd, adam"),
        ({"optimizers": ("sgd", "adam")}, "no learning-rate bounds for optimizer 'adam'"),
        ({"weight_decay": (0.0, 1e-2)}, "0 < low <= high"),
        ({"weight_decay": 1e-3}, r"range \[low, high\]"),
        ({"warmup_max_fraction": 0.9}, "warmup_max_fraction"),
        ({"lr_dropout": "yes"}, "lr_dropout"),
    ],
)
def test_search_space_rejects_bad_settings(kwargs: dict[str, Any], match: str) -> None:
    settings: dict[str, Any] = {"bounds": {"sgd": BOUNDS}, "schedules": ("cosine",), **kwargs}
    with pytest.raises(UsageError, match=match):
        SearchSpace(**settings)


def test_sample_rejects_a_tiny_budget() -> None:
    trial = random_study().ask()
    with pytest.raises(UsageError, match="total_steps must be an integer >= 2"):
        sample(trial, make_space(("cosine",)), total_steps=1, steps_per_epoch=1)
    with pytest.raises(UsageError, match="steps_per_epoch"):
        sample(trial, make_space(("cosine",)), total_steps=10, steps_per_epoch=0)


# ------------------------------------------------------------------------------------ LR bounds
def test_bounds_from_finder_json(tmp_path: Path) -> None:
    data = {"suggested_lr": 0.01, "lr_low": 0.001, "lr_high": 0.1, "lrs": [1, 2], "losses": [3, 4]}
    (tmp_path / "finder.json").write_text(json.dumps(data))
    expected = LRBounds(lr_low=0.001, lr_high=0.1, suggested_lr=0.01)
    assert LRBounds.from_finder_json(tmp_path / "finder.json") == expected
    assert LRBounds.from_finder_json(tmp_path) == expected  # the output folder of `lrtune find`


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (None, "not found; run `lrtune find"),
        ('{"suggested_lr": 0.01,\n "lr_low": }', "not valid JSON \\(line 2"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"suggested_lr": 0.01, "lr_low": 0.001}', "lacks lr_high"),
        ('{"suggested_lr": "big", "lr_low": 0.001, "lr_high": 0.1}', "suggested_lr must be a number"),
        ('{"suggested_lr": 0.5, "lr_low": 0.001, "lr_high": 0.1}', "lr_low <= suggested_lr <= lr_high"),
        ('{"suggested_lr": 0.01, "lr_low": -1, "lr_high": 0.1}', "lr_low must be finite and > 0"),
        ('{"suggested_lr": 0.01, "lr_low": 0.001, "lr_high": NaN}', "lr_high must be finite"),
    ],
)
def test_bounds_from_finder_json_errors(tmp_path: Path, text: str | None, match: str) -> None:
    path = tmp_path / "finder.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(UsageError, match=match) as info:
        LRBounds.from_finder_json(path)
    assert "\n" not in str(info.value)
