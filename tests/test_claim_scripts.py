"""Smoke tests of the scripts that measure the guides' claims and per-part factors (``--quick``, in process)."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
MEAN_STD = r"(\d\.\d{4}) ± (\d\.\d{4})"
PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow


def run(
    script: str,
    args: list[str],
    cwd: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> str:
    """Run ``script``'s ``main(args)`` in this process (torch already imported) from ``cwd``; its stdout."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", [str(SCRIPTS), *sys.path])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # leave the test process's threads alone
    namespace = runpy.run_path(str(SCRIPTS / script), run_name=Path(script).stem)
    namespace["main"](args)
    return capsys.readouterr().out


def test_check_clr_quick_prints_every_configuration_and_writes_the_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run("check_clr.py", ["--quick", "--plot", "clr.png"], tmp_path, monkeypatch, capsys)
    low, high = (float(v) for v in re.search(r"lr_low (\S+), lr_high (\S+),", out).groups())  # type: ignore[union-attr]
    rows = re.findall(
        rf"^(fixed \S+|CLR step \d+ ep)(?: \(best fixed\))?\s+{MEAN_STD}\s+(\d+|never)\s+(\d)/1", out, re.M
    )
    names = [row[0] for row in rows]
    assert names == [f"fixed {low:.3g}", f"fixed {high:.3g}", "CLR step 1 ep"], out
    assert out.count("(best fixed)") == 1
    target = float(re.search(r"^target: (\d\.\d{4})", out, re.M).group(1))  # type: ignore[union-attr]
    best = next(row for row in rows if f"{row[0]} (best fixed)" in out)
    assert (
        float(best[1]) == pytest.approx(target, abs=1e-4) and best[4] == "1"
    )  # the best fixed rate reaches its own mean
    assert (tmp_path / "clr.png").read_bytes()[:8] == PNG


def test_check_lr_dropout_quick_compares_with_the_same_schedule_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run("check_lr_dropout.py", ["--quick", "--plot", "lrd.png"], tmp_path, monkeypatch, capsys)
    off = re.search(rf"^sgd\s+off\s+{MEAN_STD}\s+{MEAN_STD}\s+{MEAN_STD}\s+-\s+0/1$", out, re.M)
    half = re.search(
        rf"^sgd\s+0\.5\s+{MEAN_STD}\s+{MEAN_STD}\s+{MEAN_STD}\s+([+-]\d\.\d{{4}}) ± 0\.0000\s+([01])/1$",
        out,
        re.M,
    )
    assert off and half, out
    assert float(half.group(7)) == pytest.approx(float(half.group(1)) - float(off.group(1)), abs=2e-4)
    assert (half.group(8) == "1") == (float(half.group(7)) > 0)
    assert (tmp_path / "lrd.png").read_bytes()[:8] == PNG


def test_compare_part_factors_quick_retrains_each_winner_on_fresh_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run("compare_part_factors.py", ["--quick"], tmp_path, monkeypatch, capsys)
    assert re.search(
        rf"^finder only \(no search\)\s+-\s+base_lr .*\s+-\s+{MEAN_STD}\s+{MEAN_STD}$", out, re.M
    ), out
    assert re.search(
        rf"^global LR\s+0\s+base_lr [^×]*\s+\d\.\d{{4}}\s+{MEAN_STD}\s+{MEAN_STD}$", out, re.M
    ), out
    parts = re.search(
        rf"^per-part factors\s+0\s+base_lr .*, body ×(\S+)\s+\d\.\d{{4}}\s+{MEAN_STD}\s+{MEAN_STD}$",
        out,
        re.M,
    )
    assert parts and 0.01 <= float(parts.group(1)) <= 1.0, out
    assert "fresh-seed test acc" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("check_clr.py", ["--seeds", "0"]),
        ("check_clr.py", ["--grid", "x"]),
        ("check_lr_dropout.py", ["--epochs", "-1"]),
        ("compare_part_factors.py", ["--trials", "0"]),
    ],
)
def test_bad_arguments_exit_2(
    script: str,
    args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        run(script, args, tmp_path, monkeypatch, capsys)
    assert exc.value.code == 2
    assert "expected an integer >= 1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_claims_common_imports_without_running_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", [str(SCRIPTS), *sys.path])
    namespace = runpy.run_path(str(SCRIPTS / "claims_common.py"), run_name="claims_common")
    run_type = namespace["Run"]
    done = run_type(steps=(10, 20, 30), accuracy=(0.5, 0.8, 0.9), train_loss=0.1, diverged=False)
    assert done.steps_to(0.8) == 20 and done.steps_to(0.95) is None and done.final == 0.9
    assert namespace["mean_std"]([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))
