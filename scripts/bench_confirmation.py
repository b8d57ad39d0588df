"""What confirmation costs: the wall time of a default ``lrtune study`` with and without it.

Each variant is the real command in a fresh folder (range test, search, MLflow, plots — everything a user waits
for): ``lrtune study --device cpu [--task T]`` against the same with ``--confirm 0``. The two run interleaved,
``--repeats`` times, and the script prints each time, the median ratio and the confirmation runs counted in the
summary, and — a figure no other load on the machine can move — the trial-epochs the search and the
confirmation trained (read from the study storage). The goal: confirmation adds at most 30 % to a default study.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_confirmation.py            # digits, 3 repeats, ~4 minutes
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_confirmation.py --quick    # 1 repeat, 6 trials
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

GOAL = 1.30


def run(folder: Path, extra: list[str]) -> tuple[float, str]:
    """Run ``lrtune study`` in ``folder``; its wall time and stdout."""
    folder.mkdir(parents=True)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "lrtune", "study", "--device", "cpu", *extra],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"lrtune study failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return seconds, done.stdout


def epochs_spent(folder: Path) -> tuple[int, int]:
    """Trial-epochs of the study in ``folder``: its search trials, and its confirmation runs."""
    import optuna

    from lrtune.study.confirm import companion_name
    from lrtune.study.selection import EPOCHS_ATTR
    from lrtune.study.storage import study_names

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{folder}/lrtune.db"
    names = study_names(optuna.storages.RDBStorage(storage))
    name = next(n for n in names if not n.endswith(":confirm"))
    study = optuna.load_study(study_name=name, storage=storage)
    search = sum(int(t.user_attrs.get(EPOCHS_ATTR, 0)) for t in study.trials)
    epochs = int(study.user_attrs["lrtune"]["epochs"])
    confirm = 0
    if companion_name(name) in names:
        runs = optuna.load_study(study_name=companion_name(name), storage=storage).trials
        confirm = epochs * sum(1 for t in runs if t.state == optuna.trial.TrialState.COMPLETE)
    return search, confirm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repeat of a 6-trial study")
    args = parser.parse_args(argv)
    extra = ["--task", args.task]
    if args.quick:
        args.repeats = 1
        extra += ["--n-trials", "6", "--epochs", "4"]
    plain: list[float] = []
    confirmed: list[float] = []
    work: list[float] = []  # confirmation's trial-epochs per search trial-epoch
    with tempfile.TemporaryDirectory(prefix="lrtune-bench-confirm-") as scratch:
        for repeat in range(args.repeats):
            t_plain, _ = run(Path(scratch) / f"plain-{repeat}", [*extra, "--confirm", "0"])
            t_confirmed, out = run(Path(scratch) / f"confirmed-{repeat}", extra)
            runs = re.search(r"confirmed\s+(\d+) of (\d+) runs", out)
            plain.append(t_plain)
            confirmed.append(t_confirmed)
            search, confirm = epochs_spent(Path(scratch) / f"confirmed-{repeat}")
            work.append(confirm / search)
            print(
                f"repeat {repeat}: without confirmation {t_plain:.1f}s, with {t_confirmed:.1f}s "
                f"({runs.group(0) if runs else 'no confirmation line'}), ratio {t_confirmed / t_plain:.2f}; "
                f"trial-epochs: search {search}, confirmation {confirm}",
                flush=True,
            )
    ratio = statistics.median(c / p for c, p in zip(confirmed, plain, strict=True))
    verdict = "PASS" if ratio <= GOAL else "MISS"
    print(
        f"default study on {args.task}: median {statistics.median(plain):.1f}s without confirmation, "
        f"{statistics.median(confirmed):.1f}s with it; ratio {ratio:.2f} (goal <= {GOAL:.2f}: {verdict}); "
        f"confirmation trains {statistics.median(work):.0%} as many epochs as the search"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
