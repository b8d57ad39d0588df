"""Smoke tests of the measurement scripts: each runs end to end, small, in a real subprocess."""

from __future__ import annotations

import importlib.util
import os
import re
import runpy
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
