"""Racing over seeds: full schedules on each seed, the best third go on, values are means over seeds."""

from __future__ import annotations

import statistics
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from lrtune.config import build_config, make_pruner
from lrtune.study import run_study
from lrtune.study.racing import RACE_SEEDS, race_seed

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_race_seeds_are_distinct_and_start_at_the_trial_seed() -> None:
    seeds = [race_seed(base=3, index=i) for i in range(RACE_SEEDS)]
    assert seeds[0] == 3 and len(set(seeds)) == RACE_SEEDS
    assert all(0 <= race_seed(base=2**32 - 1, index=i) < 2**32 for i in range(RACE_SEEDS))


def test_the_racing_pruner_ignores_epoch_resources() -> None:
    pruner = make_pruner("racing", min_resource=4, max_resource=10)
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)


@pytest.mark.slow
def test_a_racing_study_trains_full_schedules_and_races_the_best_on_more_seeds(tmp_path: Path) -> None:
    finder = tmp_path / "finder.json"
    finder.write_text('{"suggested_lr": 0.1, "lr_low": 0.01, "lr_high": 1.0}')
    config = build_config(
        None,
        {
            "task": "digits",
            "epochs": 2,
            "n_trials": 7,
            "schedules": "constant,cosine",
            "pruner": "racing",
            "sampler": "random",
            "bounds": str(finder),
            "storage": f"sqlite:///{tmp_path}/lrtune.db",
            "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
            "study_name": "race",
            "device": "cpu",
            "confirm": 0,
        },
    )
    outcome = run_study(config)
    study = optuna.load_study(study_name="race", storage=config.storage)
    trials = study.get_trials()
    assert outcome.complete + outcome.pruned == 7
    assert outcome.pruned >= 1  # the best third of each rung goes on, the rest stop after one seed
    client = MlflowClient(tracking_uri=config.tracking_uri)
    for trial in trials:
        steps = sorted(trial.intermediate_values)
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert steps == [1, 2, 3]
            assert trial.user_attrs["epochs_trained"] == RACE_SEEDS * 2  # every seed trained the whole budget
            run = client.get_run(trial.user_attrs["mlflow_run_id"])
            seeds = [m.value for m in client.get_metric_history(run.info.run_id, "race_value")]
            assert len(seeds) == RACE_SEEDS
            assert trial.value == pytest.approx(statistics.fmean(seeds))
            assert len(seeds) == RACE_SEEDS and len(set(seeds)) >= 1
        else:
            assert trial.state == optuna.trial.TrialState.PRUNED
            assert steps == [1] and trial.user_attrs["epochs_trained"] == 2
            assert "after seed 1" in trial.user_attrs["reason"]
        # Curves of the first seed, epoch by epoch, as for every trial.
        history = client.get_metric_history(trial.user_attrs["mlflow_run_id"], "val_loss")
        assert [m.step for m in history] == [1, 2]
