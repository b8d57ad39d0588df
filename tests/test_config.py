"""Tests of study settings: defaults, study files, flag precedence and every kind of bad input."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from lrtune.config import (
    DEFAULT_SCHEDULES,
    FIELD_NAMES,
    PRUNERS,
    SAMPLERS,
    StudyConfig,
    build_config,
    load_study_file,
    make_pruner,
    make_sampler,
)
from lrtune.errors import UsageError
from lrtune.schedules import REGISTRY
from lrtune.space import LRBounds

optuna.logging.set_verbosity(optuna.logging.WARNING)

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = StudyConfig()
    assert (config.task, config.n_trials, config.timeout, config.epochs, config.batch_size) == (
        "digits",
        20,
        None,
        10,
        None,
    )
    assert config.storage == "sqlite:///lrtune.db" and config.tracking_uri == "sqlite:///mlflow.db"
    assert config.study_name == "lrtune-digits" and config.experiment == "lrtune-digits"
    assert (config.sampler, config.pruner, config.bounds, config.optimizer) == (
        "tpe",
        "hyperband",
        "auto",
        "sgd",
    )
    assert set(config.schedules) == set(REGISTRY) and config.schedules == DEFAULT_SCHEDULES
    assert config.optimizers == ("sgd",)
    assert config.search_optimizers == ("sgd", "adam", "adamw")
    assert (config.weight_decay, config.lr_dropout, config.warmup_max_fraction) == (None, False, 0.2)
    assert (config.finder_num_iter, config.finder_repeats) == (200, 3)
    assert (config.data_dir, config.seed, config.device, config.amp) == (Path("data"), 0, "auto", False)


def test_study_name_and_experiment_derive_from_the_task() -> None:
    assert StudyConfig(task="mypkg.tasks:make_task").study_name == "lrtune-mypkg.tasks-make_task"
    config = StudyConfig(task="mnist", study_name="night", experiment=None)
    assert (config.study_name, config.experiment) == ("night", "night")
    assert StudyConfig(experiment="exp").experiment == "exp"


def test_file_values_and_flag_precedence(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
task: fashion_mnist
n-trials: 40          # hyphens work like underscores
epochs: 3
schedules: [cosine, one_cycle]
weight_decay: [1e-5, 1.0e-2]   # YAML reads 1e-5 as a string; it is still a number here
optimizer: search
search_optimizers: [sgd, adamw]
finder:
  num_iter: 50
  repeats: 2
""",
    )
    values = load_study_file(path)
    assert values["schedules"] == ("cosine", "one_cycle") and values["weight_decay"] == (1e-5, 1e-2)
    overrides: dict[str, Any] = {"epochs": 7, "n_trials": None, "sampler": "random", "schedules": None}
    config = build_config(values, overrides)
    assert (config.task, config.n_trials, config.epochs, config.sampler) == ("fashion_mnist", 40, 7, "random")
    assert config.schedules == ("cosine", "one_cycle")
    assert config.optimizers == ("sgd", "adamw")
    assert (config.finder_num_iter, config.finder_repeats) == (50, 2)
    assert build_config(None, {}) == StudyConfig()


def test_comma_separated_names_from_the_command_line() -> None:
    config = build_config(None, {"schedules": "cosine, step,cosine", "search_optimizers": "adam,sgd"})
    assert config.schedules == ("cosine", "step")
    assert config.search_optimizers == ("adam", "sgd")
    assert build_config(None, {"weight_decay": "1e-5,1e-3"}).weight_decay == (1e-5, 1e-3)


def test_empty_study_file_means_defaults(tmp_path: Path) -> None:
    assert load_study_file(write(tmp_path, "# nothing set\n")) == {}


def test_search_space_from_the_config() -> None:
    config = StudyConfig(
        optimizer="search", schedules=("cosine",), lr_dropout=True, weight_decay=(1e-4, 1e-2)
    )
    bounds = {name: LRBounds(1e-3, 1e-1, 1e-2) for name in config.optimizers}
    space = config.search_space(bounds)
    assert space.optimizers == ("sgd", "adam", "adamw") and space.schedules == ("cosine",)
    assert (space.weight_decay, space.lr_dropout, space.warmup_max_fraction) == ((1e-4, 1e-2), True, 0.2)


def test_bounds_file_must_exist(tmp_path: Path) -> None:
    finder = write(tmp_path, json.dumps({"suggested_lr": 0.1, "lr_low": 0.01, "lr_high": 1.0}), "finder.json")
    assert StudyConfig(bounds=str(finder)).bounds == str(finder)
    with pytest.raises(UsageError, match=r"bounds file .*missing\.json' not found"):
        StudyConfig(bounds=str(tmp_path / "missing.json"))


def test_to_dict_is_plain_and_masks_passwords() -> None:
    config = StudyConfig(
        storage="postgresql://bob:hunter2@db:5432/optuna",
        tracking_uri="https://alice:s3cret@mlflow.example.com",
        schedules=("cosine", "step"),
        weight_decay=(1e-5, 1e-3),
    )
    out = config.to_dict()
    text = json.dumps(out)
    assert "hunter2" not in text and "s3cret" not in text
    assert out["storage"] == "postgresql://bob:***@db:5432/optuna"
    assert out["schedules"] == ["cosine", "step"] and out["data_dir"] == "data"
    assert set(out) == set(FIELD_NAMES)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        StudyConfig().epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_trials": 0}, r"n_trials must be at least 1, got n_trials=0"),
        ({"n_trials": "ten"}, r"n_trials must be an integer"),
        ({"n_trials": True}, r"n_trials must be an integer"),
        ({"epochs": 0}, r"epochs must be at least 1"),
        ({"timeout": -5}, r"timeout must be > 0"),
        ({"batch_size": 0}, r"batch_size must be at least 1"),
        ({"sampler": "bayes"}, r"unknown sampler 'bayes'; choose one of: tpe, random, gp, cmaes"),
        ({"pruner": "asha"}, r"unknown pruner 'asha'; choose one of: hyperband, median, none"),
        (
            {"schedules": "cosine,warp"},
            r"unknown schedule type 'warp' in schedules; choose from: constant, step",
        ),
        ({"schedules": ""}, r"schedules must name at least one schedule type"),
        (
            {"optimizer": "lion"},
            r"unknown optimizer 'lion'; choose one of: sgd, adam, adamw, rmsprop, adagrad, search",
        ),
        (
            {"search_optimizers": ["sgd", "lion"]},
            r"unknown optimizer 'lion' in search_optimizers; choose from: sgd",
        ),
        ({"weight_decay": [1e-3]}, r"weight_decay must be a range \[low, high\]"),
        ({"weight_decay": [1e-2, 1e-3]}, r"0 < low <= high"),
        ({"lr_dropout": "yes"}, r"lr_dropout must be true or false"),
        ({"warmup_max_fraction": 0.8}, r"warmup_max_fraction must lie in \[0, 0.5\]"),
        ({"finder_num_iter": 5}, r"finder_num_iter must be at least 10"),
        ({"finder_repeats": 0}, r"finder_repeats must be at least 1"),
        ({"storage": ""}, r"storage must be a non-empty string"),
        ({"device": "tpu"}, r"unknown device 'tpu'"),
        ({"seed": -1}, r"seed must be at least 0"),
        ({"amp": 1}, r"amp must be true or false"),
    ],
)
def test_bad_settings_raise_one_line_usage_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match) as info:
        StudyConfig(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("task: digits\nepochs: [3\n", r"is not valid YAML at line 3, column 1"),
        ("task: digits\n  epochs: 3\n", r"is not valid YAML at line 2"),
        ("- cosine\n- step\n", r"must be a mapping of settings \(key: value\), got list"),
        ("tasks: digits\nepoch: 3\n", r"unknown keys 'tasks', 'epoch'; valid keys: task, n_trials,"),
        ("n_trials: 0\n", r"study\.yaml': n_trials must be at least 1"),
        ("epochs: 0\n", r"epochs must be at least 1"),
        ("sampler: bayes\n", r"unknown sampler 'bayes'; choose one of: tpe"),
        ("pruner: asha\n", r"unknown pruner 'asha'"),
        ("schedules: [cosine, warp]\n", r"unknown schedule type 'warp'"),
        ("optimizer: lion\n", r"unknown optimizer 'lion'"),
        ("epochs: three\n", r"epochs must be an integer, got epochs='three'"),
        ("finder: 200\n", r"the finder section must be a mapping"),
        (
            "finder:\n  iterations: 200\n",
            r"unknown key 'iterations' in the finder section; valid keys: num_iter",
        ),
        ("finder_repeats: 2\nfinder:\n  repeats: 3\n", r"finder_repeats is given twice"),
    ],
)
def test_bad_study_files(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(UsageError, match=match) as info:
        load_study_file(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_missing_study_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"study file '.*nope.yaml' not found"):
        load_study_file(tmp_path / "nope.yaml")


def test_unknown_override_is_named() -> None:
    with pytest.raises(UsageError, match=r"unknown setting 'trials'; valid settings: task"):
        build_config(None, {"trials": 3})


def test_cmaes_without_its_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "cmaes" else real_find_spec(name, *a)
    )
    with pytest.raises(UsageError, match="pip install cmaes"):
        StudyConfig(sampler="cmaes")


def test_cmaes_sampler_runs_a_mixed_space() -> None:
    study = optuna.create_study(sampler=make_sampler("cmaes", seed=0))

    def objective(trial: optuna.Trial) -> float:
        kind = trial.suggest_categorical("schedule", ["a", "b"])
        x = trial.suggest_float("base_lr", 1e-3, 1.0, log=True)
        return (x - 0.1) ** 2 + (0.0 if kind == "a" else 0.01)

    study.optimize(objective, n_trials=6)
    assert len(study.trials) == 6 and study.best_value < 1.0


def test_sampler_factories() -> None:
    assert isinstance(make_sampler("tpe", seed=0), optuna.samplers.TPESampler)
    assert isinstance(make_sampler("random", seed=0), optuna.samplers.RandomSampler)
    assert isinstance(make_sampler("gp", seed=0), optuna.samplers.GPSampler)
    assert list(SAMPLERS) == ["tpe", "random", "gp", "cmaes"] and list(PRUNERS) == [
        "hyperband",
        "median",
        "none",
        "racing",
    ]
    with pytest.raises(UsageError, match="unknown sampler"):
        make_sampler("grid", seed=0)
    # Equal seeds propose equal trials (so distributed workers need different seeds).
    draws = []
    for _ in range(2):
        study = optuna.create_study(sampler=make_sampler("tpe", seed=7))
        draws.append(study.ask().suggest_float("x", 0.0, 1.0))
    assert draws[0] == draws[1]


def _report(study: optuna.Study, values: list[float]) -> list[bool]:
    """Report ``values`` at steps 1, 2, ... of a new trial; whether it would be pruned after each."""
    trial = study.ask()
    pruned = []
    for step, value in enumerate(values, start=1):
        trial.report(value, step)
        pruned.append(trial.should_prune())
    study.tell(trial, values[-1])
    return pruned


@pytest.mark.parametrize("name", ["median", "hyperband"])
def test_pruners_never_prune_before_min_resource(name: str) -> None:
    study = optuna.create_study(
        study_name="pruning", pruner=make_pruner(name, min_resource=3, max_resource=9)
    )
    for _ in range(8):
        _report(study, [1.0] * 9)
    pruned = _report(study, [100.0] * 9)
    assert pruned[:2] == [False, False]
    if name == "median":
        assert pruned[2]  # judged at step 3, the first step it may be
    assert not any(
        _report(optuna.create_study(pruner=make_pruner("none", min_resource=1, max_resource=9)), [1e9] * 9)
    )


def test_pruner_resources_are_checked() -> None:
    with pytest.raises(UsageError, match="min_resource"):
        make_pruner("hyperband", min_resource=0, max_resource=5)
    with pytest.raises(UsageError, match="unknown pruner"):
        make_pruner("asha", min_resource=1, max_resource=5)


def test_config_imports_neither_torch_nor_optuna() -> None:
    code = "import sys, lrtune.config; print(sorted({'torch', 'optuna', 'mlflow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


STUDY_FILES = sorted((REPO / "studies").glob("*.yaml"))


@pytest.mark.skipif(not STUDY_FILES, reason="no study files shipped yet")
@pytest.mark.parametrize("path", STUDY_FILES, ids=[p.name for p in STUDY_FILES])
def test_shipped_study_files_parse(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    config = build_config(load_study_file(path), {})
    assert config.n_trials >= 1 and config.schedules
