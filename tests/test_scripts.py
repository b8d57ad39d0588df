"""Smoke tests of the measurement scripts: each runs end to end, small, in a real subprocess."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import runpy
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
BENCH = SCRIPTS / "bench_finder.py"
CHECK = SCRIPTS / "check_suggestions.py"
HAS_TLF = importlib.util.find_spec("torch_lr_finder") is not None

pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )


def table_rows(stdout: str, model: str) -> dict[str, list[str]]:
    """The benchmark table's rows of one model: variant -> the columns after it."""
    rows = {}
    for line in stdout.splitlines():
        match = re.match(rf"^{model}\s+(.+?)\s{{2,}}(\d.*)$", line)
        if match:
            rows[match.group(1).strip()] = match.group(2).split()
    return rows


def test_bench_finder_runs_every_variant_for_the_same_steps(tmp_path: Path) -> None:
    proc = run(
        [str(BENCH), "--models", "tiny", "--steps", "30", "--repeats", "2", "--device", "cpu"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "torch threads 1" in out
    rows = table_rows(out, "tiny")
    expected = {"bare loop", "lrtune", "lrtune + make_loader"} | ({"torch-lr-finder"} if HAS_TLF else set())
    assert set(rows) == expected, out
    for variant, cols in rows.items():
        assert cols[-1] == "30", (variant, cols)  # optimizer.step() calls counted in every run
        assert float(cols[0]) > 0
    assert float(rows["bare loop"][1]) == 1.0
    assert re.search(
        r"^goal \(a\) lrtune / bare loop <= 1\.05 on every model: tiny \d+\.\d+\s+(PASS|MISS)$", out, re.M
    )
    if HAS_TLF:
        assert re.search(r"^goal \(b\) .* tiny model: \d+\.\d+\s+(PASS|MISS)$", out, re.M)
    assert list(tmp_path.iterdir()) == []  # a benchmark writes nothing


def test_bench_finder_without_torch_lr_finder_reports_the_bare_ratio_only(tmp_path: Path) -> None:
    code = (
        "import runpy, sys\n"
        "sys.modules['torch_lr_finder'] = None  # makes the import fail\n"
        f"sys.argv = [{str(BENCH)!r}, '--models', 'tiny', '--steps', '20', '--repeats', '1', '--device', 'cpu']\n"
        f"runpy.run_path({str(BENCH)!r}, run_name='__main__')\n"
    )
    proc = run(["-c", code], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "pip install torch-lr-finder==0.2.2" in proc.stdout
    assert set(table_rows(proc.stdout, "tiny")) == {"bare loop", "lrtune", "lrtune + make_loader"}
    assert "goal (b) lrtune / torch-lr-finder <= 0.9 on the tiny model: not measured" in proc.stdout


def test_check_suggestions_prints_regret_per_task_and_saves_the_plot(tmp_path: Path) -> None:
    args = [str(CHECK), "--tasks", "digits:sgd:1,friedman-nll:adam:1", "--seeds", "1", "--per-decade", "1"]
    args += [
        "--finder-repeats",
        "1",
        "--min-lr",
        "1e-3",
        "--max-lr",
        "1",
        "--device",
        "cpu",
        "--plot",
        "s.png",
    ]
    proc = run(args, tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for label in ("digits/sgd", "friedman-nll/adam"):
        row = re.search(rf"^{re.escape(label)}\s+(.*)\s(PASS|MISS)\s", out, re.M)
        assert row, out
        suggested, low, high, best_lr, _best, _sugg, regret, inside = row.group(1).split()
        assert float(low) <= float(suggested) <= float(high)
        assert float(best_lr) > 0 and inside in ("yes", "no")
        assert float(regret) == float(regret)  # a number, not nan
    assert re.search(r"^summary: \d/2 tasks PASS; regret <= 0\.05 on \d/2", out, re.M)
    assert "estimators: steepest" in out
    png = (tmp_path / "s.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("script", "args"),
    [
        (BENCH, ["--steps", "0"]),
        (BENCH, ["--mid-steps", "5"]),
        (BENCH, ["--models", "huge"]),
        (BENCH, ["--device", "tpu"]),
        (CHECK, ["--tasks", "nope:sgd:1"]),
        (CHECK, ["--tasks", "digits:lbfgs:1"]),
        (CHECK, ["--tasks", "digits:sgd:0"]),
        (CHECK, ["--min-lr", "1", "--max-lr", "0.1"]),
    ],
)
def test_scripts_reject_bad_arguments_with_exit_code_2(
    script: Path, args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts the checkout on sys.path
    namespace = runpy.run_path(str(script), run_name=script.stem)
    with pytest.raises(SystemExit) as exc:
        namespace["parse_args"](args)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        namespace["parse_args"](["--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


# --------------------------------------------------------------------------- compare_strategies, bench_study_overhead

COMPARE = SCRIPTS / "compare_strategies.py"
BENCH_STUDY = SCRIPTS / "bench_study_overhead.py"
MEAN_STD = r"(\d\.\d{4}) ± (\d\.\d{4}) \((\d\.\d{4})-(\d\.\d{4})\)"


def test_compare_strategies_scores_every_strategy_on_the_test_split(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    args = [str(COMPARE), "--quick", "--tasks", "digits", "--plot", "c.png", "--work-dir", str(work)]
    proc = run(args, tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "torch threads 1" in out
    assert "fresh seeds 1000..1001 (2)" in out
    assert "scored on the test split (180 samples)" in out
    for name in ("fixed LR", "exp decay", "Adam", "strong default", "study winner"):
        match = re.search(rf"^{name}\s+{MEAN_STD}\s+{MEAN_STD}\s+\d+\.\d$", out, re.M)
        assert match, (name, out)
        acc_mean, _std, acc_lo, acc_hi = (float(v) for v in match.groups()[:4])
        assert 0.0 <= acc_lo <= acc_mean <= acc_hi <= 1.0
        assert (
            abs(acc_lo * 180 - round(acc_lo * 180)) < 0.01
        )  # a count of the 180 test images (4 digits shown)
    assert re.search(r"exp decay check: .* = \d\.\de[+-]\d+\s+OK$", out, re.M)
    best = json.loads((work / "digits" / "best-digits.json").read_text())
    assert best["epochs"] == 2 and best["batch_size"] == 64
    assert (
        f"{best['schedule']['type']}: base_lr {best['schedule']['base_lr']:.3g}" in out
    )  # what was retrained
    suggested = re.search(
        r"cosine from the range test's suggested_lr (\S+) to 0.1% of it, no warmup \(the study's baseline trial\)",
        out,
    )
    assert suggested, out
    if "baseline" in best:  # the strong default is exactly the baseline the study confirmed against
        assert f"{best['baseline']['schedule']['base_lr']:.3g}" == suggested.group(1)
    assert re.search(
        r"^gain of the study winner over the strong default \(test accuracy\), paired over 2 seeds: "
        r"[+-]\d\.\d{4}, 95% CI \[[+-]\d\.\d{4}, [+-]\d\.\d{4}\]$",
        out,
        re.M,
    )
    if "gain" in best:  # a confirmed winner: the best file's own figures are shown
        shown = re.search(r"^best file \(validation, the study's own confirmation\): (\{.*\})$", out, re.M)
        assert shown, out
        assert json.loads(shown.group(1))["gain"] == best["gain"]
    budget = re.search(
        r"^study budget: 4 trials \(.*\); (\d+) trial-epochs in the search \+ (\d+) in (\d+) confirmation runs",
        out,
        re.M,
    )
    assert budget, out
    search_epochs, confirm_epochs, confirm_runs = (int(v) for v in budget.groups())
    assert 4 <= search_epochs <= 4 * 2 * 3 and confirm_epochs == 2 * confirm_runs
    assert re.search(r"^  digits: winner never worse than the strong default .*: (PASS|MISS)$", out, re.M)
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "work"]  # the study wrote only into work/


def test_compare_strategies_rejects_a_task_without_data(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    namespace = runpy.run_path(str(COMPARE), run_name=COMPARE.stem)
    code = namespace["main"](["--tasks", "fashion-mnist", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "error: Fashion-MNIST is not in" in capsys.readouterr().err


def test_bench_study_overhead_times_equal_trials_through_the_real_study_engine(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    args = [str(BENCH_STUDY), "--width", "16", "--epochs", "2", "--pairs", "2", "--profile-trials", "1"]
    args += ["--end-to-end", "1", "--work-dir", str(work)]
    proc = run(args, tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "torch threads 1" in out
    assert "equal work: the same plan in 2/2 rounds, the same objective value in 2/2" in out
    for name in (r"bare Optuna \(in memory\)", r"lrtune \(SQLite \+ MLflow\)"):
        row = re.search(rf"^{name}\s+2\s+(\d+\.\d+)\s+\S+\s+(\d+\.\d+)\s+(-?\d+\.\d+)$", out, re.M)
        assert row, (name, out)
        seconds, training, _bookkeeping = (float(v) for v in row.groups())
        assert 0 < training <= seconds
    assert re.search(
        r"SQLite write transactions per lrtune trial \(median\): lrtune\.db \d+, mlflow\.db \d+", out
    )
    # The bookkeeping calls were timed in every trial: lrtune logs and reports each epoch, the bare loop reports.
    assert re.search(r"^  MLflow: log_epoch, every epoch\s+\d+\.\d\s+0\.0\s+2$", out, re.M)
    assert re.search(r"^  Optuna: trial\.report, every epoch\s+\d+\.\d\s+\d+\.\d\s+2$", out, re.M)
    assert re.search(r"^cross-check, .*same plans: yes", out, re.M)
    assert re.search(r"^goal: .* <= 5 % of a 2-second trial: -?\d+ ms = -?\d+\.\d %  (PASS|MISS)$", out, re.M)
    # lrtune's side logged through the real tracker: a parent run and one child per trial, with per-step lr.
    with sqlite3.connect(work / "engine" / "mlflow.db") as db:
        runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        lrs = db.execute("SELECT COUNT(*) FROM metrics WHERE key = 'lr'").fetchone()[0]
    trials = 1 + 2 + 1  # warm-up, rounds, profiled
    assert runs == 1 + trials
    assert lrs == trials * 2 * 23  # 2 epochs × 23 steps each
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


@pytest.mark.parametrize(
    ("script", "args"),
    [
        (COMPARE, ["--seeds", "1"]),  # a paired interval needs two seeds
        (COMPARE, ["--seed-base", "5"]),  # the studies train with seeds 0..29
        (COMPARE, ["--tasks", "mnist1d-cnn", "--study-seed", "990"]),  # 990..1019 meets the fresh 1000..1009
        (COMPARE, ["--tasks", ","]),
        (COMPARE, ["--n-trials", "0"]),
        (COMPARE, ["--confirm", "-1"]),
        (BENCH_STUDY, ["--pairs", "0"]),
        (BENCH_STUDY, ["--pairs", "3", "--end-to-end", "4"]),
        (BENCH_STUDY, ["--trial-seconds", "0"]),
        (BENCH_STUDY, ["--pruner", "bogus"]),
    ],
)
def test_study_scripts_reject_bad_arguments_with_exit_code_2(
    script: Path, args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts the checkout on sys.path
    namespace = runpy.run_path(str(script), run_name=script.stem)
    with pytest.raises(SystemExit) as exc:
        namespace["parse_args"](args)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        namespace["parse_args"](["--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_compare_pruners_spends_the_same_budget_under_each_pruner(tmp_path: Path) -> None:
    proc = run(
        [
            str(SCRIPTS / "compare_pruners.py"),
            "--quick",
            "--pruners",
            "none,racing",
            "--studies",
            "1",
            "--json",
            str(tmp_path / "runs.json"),
        ],
        tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[1]: line.split() for line in proc.stdout.splitlines() if line.startswith("digits ")}
    assert {"none", "racing", "(default)"} <= set(rows), proc.stdout
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert {r["pruner"] for r in runs} == {"none", "racing"}
    for r in runs:
        assert r["search_epochs"] >= 6 * 4  # the budget: 6 full trials of 4 epochs
        assert len(r["winner_test"]) == len(r["default_test"]) == 2  # the fresh test seeds
        assert r["winner"]["confirmed"] is True and "gain" in r["winner"]
        assert all(0 < v <= 1 for v in r["winner_test"])
    none = next(r for r in runs if r["pruner"] == "none")
    assert none["trials"] == 6 and none["search_epochs"] == 24  # no pruning: every trial trains all epochs
