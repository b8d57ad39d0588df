"""Smoke test of scripts/warmup_matters.py: a real subprocess, small, every schedule on the same seeds."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "warmup_matters.py"


@pytest.mark.slow
def test_warmup_matters_prints_every_schedule_with_mean_and_std(tmp_path: Path) -> None:
    args = ["--epochs", "1", "--seeds", "2", "--norms", "post", "--peaks", "lr_high", "--num-iter", "20"]
    args += ["--repeats", "1", "--train-size", "128"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"post-LN: finder suggested_lr \S+, lr_high \S+", proc.stdout)
    for name in ("cosine ", "cosine+warmup", "inverse_sqrt"):
        line = next(line for line in proc.stdout.splitlines() if "peak=lr_high" in line and name in line)
        assert re.search(
            r"acc (0|1)\.\d{3} ± \d\.\d{3}  loss \d+\.\d{3} ± \d+\.\d{3}  diverged [0-2]/2", line
        )
    assert re.search(r"^post\s+lr_high \S+\s+.*[+-]\d\.\d{3}$", proc.stdout, re.MULTILINE)  # the table row


@pytest.mark.parametrize(
    "args",
    [
        ["--epochs", "0"],
        ["--warmup-frac", "1"],
        ["--norms", "mid"],
        ["--peaks", "huge"],
        ["--train-size", "3"],
    ],
)
def test_warmup_matters_rejects_bad_arguments_with_exit_code_2(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts the checkout on sys.path
    namespace = runpy.run_path(str(SCRIPT), run_name=SCRIPT.stem)
    with pytest.raises(SystemExit) as exc:
        namespace["parse_args"](args)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err
