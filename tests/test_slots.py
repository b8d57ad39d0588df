"""WAITING slots: exact totals across workers, stale trials failed and run again, one lock per study."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
import pytest

from lrtune.study.slots import SLOT_ATTR, fail_stale, pop_slot, run_slots, study_lock, top_up
from lrtune.study.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")


def _study(folder: Path, **beat: int) -> optuna.Study:
    storage = open_storage(f"sqlite:///{folder}/lrtune.db", **beat)
    return optuna.create_study(study_name="slots", storage=storage, load_if_exists=True)


def test_concurrent_top_ups_add_the_missing_slots_once(tmp_path: Path) -> None:
    _study(tmp_path).enqueue_trial({"x": 0.5})  # a waiting trial counts as a slot already
    studies = [_study(tmp_path) for _ in range(4)]
    barrier = threading.Barrier(len(studies))
    added: list[int] = []

    def worker(study: optuna.Study) -> None:
        barrier.wait()
        added.append(top_up(study, 6))

    threads = [threading.Thread(target=worker, args=(s,)) for s in studies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trials = _study(tmp_path).get_trials()
    assert sorted(added) == [0, 0, 0, 5]
    assert len(trials) == 6 and all(t.state == optuna.trial.TrialState.WAITING for t in trials)
    assert [SLOT_ATTR in t.system_attrs for t in trials] == [False] + [True] * 5


def test_a_slot_is_popped_once(tmp_path: Path) -> None:
    study = _study(tmp_path)
    top_up(study, 2)
    first, second, third = pop_slot(study), pop_slot(_study(tmp_path)), pop_slot(study)
    assert first is not None and second is not None and first != second and third is None


def test_workers_in_threads_finish_exactly_the_total(tmp_path: Path) -> None:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        if x < 0.3:
            raise optuna.TrialPruned()
        return x

    _study(tmp_path)
    counts: list[int] = []
    threads = [
        threading.Thread(target=lambda: counts.append(run_slots(_study(tmp_path), objective, total=9)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trials = _study(tmp_path).get_trials()
    assert sum(counts) == 9 and len(trials) == 9
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    assert len({t.params["x"] for t in trials}) == 9  # every slot was sampled, none twice
    assert run_slots(_study(tmp_path), objective, total=9) == 0


def test_a_stale_trial_fails_and_a_waiting_worker_runs_it_again(tmp_path: Path) -> None:
    beat = {"heartbeat_interval": 1, "grace_period": 2}
    study = _study(tmp_path, **beat)
    top_up(study, 2)
    dead = study._storage.get_trial(pop_slot(study))  # a worker that died in its trial
    study._storage.set_trial_param(dead._trial_id, "x", 0.25, optuna.distributions.FloatDistribution(0, 1))
    study._storage.record_heartbeat(dead._trial_id)
    assert fail_stale(study) == 0  # within its grace period
    started = time.monotonic()
    finished = run_slots(_study(tmp_path, **beat), lambda t: t.suggest_float("x", 0, 1), total=2, poll=0.5)
    assert finished == 2 and time.monotonic() - started >= 1.5  # it waited for the dead trial
    trials = _study(tmp_path).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[2].system_attrs["failed_trial"] == dead.number and trials[2].params == {"x": 0.25}


def test_a_worker_does_not_wait_without_heartbeats(tmp_path: Path) -> None:
    study = _study(tmp_path)
    storage = open_storage(f"sqlite:///{tmp_path}/lrtune.db", heartbeat=False)
    plain = optuna.load_study(study_name="slots", storage=storage)
    top_up(study, 2)
    assert pop_slot(study) is not None  # running elsewhere, forever as far as we can tell
    assert run_slots(plain, lambda t: t.suggest_float("x", 0, 1), total=2) == 1


def test_the_sqlite_lock_excludes_other_holders(tmp_path: Path) -> None:
    study, other = _study(tmp_path), _study(tmp_path)
    order: list[str] = []
    with study_lock(study):
        thread = threading.Thread(target=lambda: _hold(other, order))
        thread.start()
        time.sleep(0.3)
        order.append("first released")
    thread.join()
    assert order == ["first released", "second held"]
    assert (tmp_path / "lrtune.db.lock").exists()


def _hold(study: optuna.Study, order: list[str]) -> None:
    with study_lock(study):
        order.append("second held")
