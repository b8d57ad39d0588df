"""The command line: every bad input is one line on stderr, exit code 2, and nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from lrtune.cli import cli


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def assert_one_line_usage_error(result: Result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in result.output


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def written(folder: Path, *, ignore: tuple[str, ...] = ()) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in ignore and p.name != "__pycache__")


def test_help_lists_every_command() -> None:
    result = run_cli("--help")
    assert result.exit_code == 0
    for command in ("find", "ui"):
        assert command in result.output


def test_help_imports_no_torch() -> None:
    code = "import sys, lrtune.cli; sys.exit(1 if {'torch', 'mlflow', 'optuna'} & set(sys.modules) else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--start-lr", "1", "--end-lr", "0.1"], "start_lr must be below end_lr"),
        (["--start-lr", "1", "--end-lr", "1"], "start_lr must be below end_lr"),
        (["--start-lr", "0"], "positive"),
        (["--start-lr", "-1e-3"], "positive"),
        (["--end-lr", "nan"], "finite"),
        (["--end-lr", "inf"], "finite"),
        (["--num-iter", "0"], "num_iter"),
        (["--num-iter", "1"], "num_iter"),
        (["--repeats", "0"], "repeats"),
        (["--batch-size", "0"], "batch_size"),
        (["--accumulation-steps", "0"], "accumulation_steps"),
        (["--optimizer", "lamb"], "--optimizer"),
        (["--step-mode", "cubic"], "--step-mode"),
        (["--device", "tpu"], "--device"),
        (["--num-iter", "many"], "--num-iter"),
        (["--task", "no-such-task"], "no-such-task"),
        (["--task", "no_such_module_xyz:make"], "no_such_module_xyz"),
        (["--tracking-uri", "mlflow.db"], "not a URI"),
        (["--experiment", " "], "experiment"),
    ],
)
def test_find_rejects_bad_input(workdir: Path, args: list[str], fragment: str) -> None:
    result = run_cli("find", *args)
    assert_one_line_usage_error(result, fragment)
    assert written(workdir) == []


def test_find_rejects_a_task_module_that_fails(workdir: Path) -> None:
    (workdir / "broken_task_mod.py").write_text("raise RuntimeError('boom at import')\n")
    result = run_cli("find", "--task", "broken_task_mod:make_task")
    assert_one_line_usage_error(result, "broken_task_mod")
    assert written(workdir, ignore=("broken_task_mod.py",)) == []


def test_find_rejects_a_task_function_returning_the_wrong_thing(workdir: Path) -> None:
    (workdir / "wrong_task_mod.py").write_text("def make_task():\n    return 42\n")
    result = run_cli("find", "--task", "wrong_task_mod:make_task")
    assert_one_line_usage_error(result, "Task")
    assert written(workdir, ignore=("wrong_task_mod.py",)) == []


def test_find_rejects_a_dataset_missing_offline(workdir: Path) -> None:
    result = run_cli("find", "--task", "mnist", "--data-dir", str(workdir / "empty"))
    assert_one_line_usage_error(result, "mnist")
    assert written(workdir, ignore=("empty",)) == []
    assert not any((workdir / "empty").rglob("*.db"))


def test_find_rejects_an_unwritable_out(workdir: Path) -> None:
    (workdir / "a-file").write_text("keep me")
    result = run_cli("find", "--out", "a-file/sub")
    assert_one_line_usage_error(result, "a-file")
    result = run_cli("find", "--out", "a-file")
    assert_one_line_usage_error(result, "not a folder")
    assert written(workdir) == ["a-file"]
    assert (workdir / "a-file").read_text() == "keep me"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")
def test_find_rejects_cuda_without_a_gpu(workdir: Path) -> None:
    result = run_cli("find", "--device", "cuda")
    assert_one_line_usage_error(result, "cuda")
    assert written(workdir) == []


@pytest.mark.slow
def test_find_end_to_end_on_digits(workdir: Path) -> None:
    from mlflow.tracking import MlflowClient

    result = run_cli("find", "--num-iter", "80", "--repeats", "2", "--experiment", "e2e")
    assert result.exit_code == 0, result.output + result.stderr
    assert "suggested_lr" in result.stdout

    data = json.loads((workdir / "lrtune-find" / "finder.json").read_text())
    for key in (
        "suggested_lr",
        "lr_low",
        "lr_high",
        "lrs",
        "losses",
        "diverged",
        "num_iter",
        "repeats",
        "spread_decades",
        "flags",
        "method",
    ):
        assert key in data, key
    assert data["num_iter"] == 80 and data["repeats"] == 2
    assert len(data["lrs"]) == len(data["losses"]) >= 10
    assert data["lr_low"] <= data["suggested_lr"] <= data["lr_high"]
    assert data["lr_low"] >= 1e-7 and data["lr_high"] <= 10
    assert isinstance(data["spread_decades"], float)
    png = (workdir / "lrtune-find" / "finder.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    client = MlflowClient(tracking_uri="sqlite:///mlflow.db")
    experiment = client.get_experiment_by_name("e2e")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["task"] == "digits" and run.data.params["num_iter"] == "80"
    assert run.data.metrics["suggested_lr"] == pytest.approx(data["suggested_lr"])
    assert run.data.metrics["lr_low"] == pytest.approx(data["lr_low"])
    history = client.get_metric_history(run.info.run_id, "lr")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(data["lrs"])
    assert len(client.get_metric_history(run.info.run_id, "loss")) == len(data["losses"])
    assert sorted(f.path for f in client.list_artifacts(run.info.run_id)) == ["finder.json", "finder.png"]
    assert (workdir / "mlartifacts").is_dir()


def test_find_on_mnist1d_cnn(workdir: Path) -> None:
    result = run_cli("find", "--task", "mnist1d-cnn", "--num-iter", "30", "--repeats", "1", "--no-mlflow")
    assert result.exit_code == 0, result.output + result.stderr
    assert "lrtune find: mnist1d-cnn" in result.stdout
    data = json.loads((workdir / "lrtune-find" / "finder.json").read_text())
    assert data["num_iter"] == 30 and data["repeats"] == 1
    assert data["lr_low"] <= data["suggested_lr"] <= data["lr_high"]
    assert not (workdir / "mlflow.db").exists()


@pytest.mark.slow
def test_find_as_a_real_subprocess(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lrtune",
            "find",
            "--num-iter",
            "40",
            "--repeats",
            "1",
            "--no-mlflow",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "finder.json").is_file()
    assert not (tmp_path / "mlflow.db").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "lrtune", "find", "--start-lr", "2", "--end-lr", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("Error: ") and "Traceback" not in bad.stderr


def test_ui_binds_to_loopback_and_serves_our_artifacts(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr("lrtune.cli._run_group", lambda command: calls.append(command) or 0)
    result = run_cli("ui")
    assert result.exit_code == 0, result.stderr
    (command,) = calls
    assert command[1:4] == ["-m", "mlflow", "ui"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "5000"
    assert command[command.index("--backend-store-uri") + 1] == "sqlite:///mlflow.db"
    assert command[command.index("--artifacts-destination") + 1] == (workdir / "mlartifacts").as_uri()

    calls.clear()
    result = run_cli("ui", "--host", "0.0.0.0", "--port", "8080", "--tracking-uri", "http://mlflow:5000")
    assert result.exit_code == 0
    assert "--artifacts-destination" not in calls[0]
    assert calls[0][calls[0].index("--host") + 1] == "0.0.0.0"


def test_ui_rejects_a_bad_store_and_port(workdir: Path) -> None:
    assert_one_line_usage_error(run_cli("ui", "--tracking-uri", "nowhere"), "not a URI")
    assert_one_line_usage_error(run_cli("ui", "--port", "70000"), "--port")
    assert written(workdir) == []


def test_errors_never_show_a_password(workdir: Path) -> None:
    result = run_cli("find", "--tracking-uri", "postgresql://bob:hunter2@127.0.0.1:1/db")
    assert_one_line_usage_error(result, "cannot open the MLflow store postgresql://bob:***@127.0.0.1:1/db")
    assert "hunter2" not in result.output + result.stderr
    assert written(workdir) == []
