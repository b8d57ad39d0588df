"""``lrtune study``, ``best`` and ``schedules``: progress, summary, contract files, and every bad input.

Every bad input is one line ``Error: ...`` on stderr and exit code 2, and leaves an existing
study and MLflow store exactly as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner, Result

from lrtune.cli import cli
from lrtune.schedules import REGISTRY, load_schedule

BEST_KEYS = {
    "schedule",
    "optimizer",
    "epochs",
    "batch_size",
    "metric",
    "value",
    "study",
    "trial",
    "confirmed",
}
CONFIRMED_KEYS = {"seeds", "values", "mean", "std", "baseline", "gain"}
#: The flags of the study "ok" that the fixture runs (a resume must repeat them).
OK_ARGS = [
    "--study-name",
    "ok",
    "--n-trials",
    "2",
    "--epochs",
    "2",
    "--bounds",
    "finder.json",
    "--schedules",
    "constant,cosine",
    "--pruner",
    "none",
    "--device",
    "cpu",
]


def ok_args_with(overrides: list[str]) -> list[str]:
    """The flags of study "ok" with some replaced or added (``[flag, value, ...]``)."""
    flags = dict(zip(OK_ARGS[::2], OK_ARGS[1::2], strict=True))
    flags.update(zip(overrides[::2], overrides[1::2], strict=True))
    return [item for pair in flags.items() for item in pair]


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def assert_one_line_usage_error(result: Result, fragment: str) -> None:
    assert result.exit_code == 2, (result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in result.output
    assert "hunter2" not in result.output


@dataclass
class Made:
    folder: Path
    ok: Result
    diverged: Result


def digest(folder: Path) -> dict[str, str]:
    """Every file in ``folder`` (recursively) with the hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Made]:
    """A folder with lrtune.db and mlflow.db holding study "ok" (2 trials) and "diverged" (all pruned)."""
    folder = tmp_path_factory.mktemp("cli-study")
    (folder / "finder.json").write_text(json.dumps({"suggested_lr": 0.1, "lr_low": 0.02, "lr_high": 0.5}))
    (folder / "too-high.json").write_text(json.dumps({"suggested_lr": 50, "lr_low": 50, "lr_high": 500}))
    (folder / "study.yaml").write_text("task: digits\nepochs: 2\n")
    before = Path.cwd()
    os.chdir(folder)
    try:
        ok = run_cli("study", *OK_ARGS)
        diverged = run_cli(
            "study",
            *["--study-name", "diverged", "--n-trials", "2", "--epochs", "2", "--bounds", "too-high.json"],
            *["--schedules", "constant", "--device", "cpu"],
        )
    finally:
        os.chdir(before)
    yield Made(folder, ok, diverged)


@pytest.fixture()
def in_made(made: Made, monkeypatch: pytest.MonkeyPatch) -> Iterator[Made]:
    """Run in the made folder; fail the test when it changed a byte there."""
    monkeypatch.chdir(made.folder)
    monkeypatch.syspath_prepend(str(made.folder))
    before = digest(made.folder)
    yield made
    assert digest(made.folder) == before


def test_study_prints_one_line_per_trial_and_a_summary(made: Made) -> None:
    assert made.ok.exit_code == 0, (made.ok.output, made.ok.stderr)
    out = made.ok.stdout
    lines = out.splitlines()
    assert lines[0].startswith("[1/2] trial 0    cosine") and "COMPLETE" in lines[0]
    assert lines[1].startswith("[2/2] trial 1") and "best" in lines[1]
    # Confirmation: the baseline (trial 0) and the one other trial, each on 3 fresh seeds.
    confirms = [line for line in lines if " confirm trial " in line]
    assert [line.split()[0] for line in confirms] == [f"[{i}/6]" for i in range(1, 7)]
    assert sorted(line.split()[3] for line in confirms) == ["0", "0", "0", "1", "1", "1"]
    assert all("COMPLETE" in line for line in confirms)
    assert "confirmed  6 of 6 runs on fresh seeds" in out
    assert "over 3 fresh seeds" in out and "(cosine from the finder's suggestion)" in out
    assert "confirming up to 3 best trials and the baseline on 3 fresh seeds each" in made.ok.stderr
    assert "ok: 2 complete, 0 pruned, 0 failed" in out
    assert "val_accuracy (maximize)" in out
    assert "lrtune ui --tracking-uri sqlite:///mlflow.db" in out
    assert "lrtune best --storage sqlite:///lrtune.db --study-name ok --out best.json" in out
    assert "study 'ok': 2 trials of 2 epochs" in made.ok.stderr
    assert {"lrtune.db", "mlflow.db", "mlartifacts"} <= {p.name for p in made.folder.iterdir()}
    study = optuna.load_study(study_name="ok", storage=f"sqlite:///{made.folder}/lrtune.db")
    assert len(study.get_trials()) == 2


def test_a_diverging_study_prunes_every_trial_and_finishes(made: Made) -> None:
    assert made.diverged.exit_code == 0, made.diverged.stderr
    assert "diverged: 0 complete, 2 pruned, 0 failed" in made.diverged.stdout
    assert "no complete trial yet" in made.diverged.stdout
    assert made.diverged.stdout.count("PRUNED") == 2


def test_rerunning_the_same_command_adds_nothing_and_writes_nothing(in_made: Made) -> None:
    result = run_cli("study", *OK_ARGS)
    assert result.exit_code == 0, result.stderr
    assert "nothing to run" in result.stderr
    assert "ok: 2 complete" in result.stdout and "this run added 0" in result.stdout


def test_bounds_may_name_the_find_output_folder(in_made: Made) -> None:
    result = run_cli("study", *ok_args_with(["--bounds", "."]))
    assert result.exit_code == 0, result.stderr
    assert "nothing to run" in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--schedules", "cosine,bogus"], "unknown schedule type 'bogus'"),
        (["--sampler", "annealing"], "--sampler"),
        (["--pruner", "asha"], "--pruner"),
        (["--optimizer", "lamb"], "--optimizer"),
        (["--n-trials", "0"], "n_trials must be at least 1"),
        (["--n-trials", "-3"], "n_trials must be at least 1"),
        (["--epochs", "0"], "epochs must be at least 1"),
        (["--timeout", "-1"], "timeout"),
        (["--confirm", "-1"], "confirm must be at least 0"),
        (["--confirm-seeds", "-2"], "confirm_seeds must be at least 0"),
        (["--confirm-seeds", "many"], "--confirm-seeds"),
        (["--bounds", "missing.json"], "missing.json"),
        (["--bounds", "study.yaml"], "study.yaml"),  # exists, but is no finder result
        (["--device", "tpu"], "tpu"),
        (["--task", "no-such-task"], "no-such-task"),
        (["--task", "no_such_module_xyz:make"], "no_such_module_xyz"),
        (["--storage", "lrtune.db"], "not a URL"),
        (["--storage", "sqlite:///no/such/dir/x.db"], "does not exist"),
        (
            ["--storage", "nodialect://bob:hunter2@db/x"],
            "cannot open the study storage nodialect://bob:***@db/x",
        ),
        (["--storage", "postgresql://bob:hunter2@127.0.0.1:1/x"], "cannot open the study storage"),
        (["--tracking-uri", "mlflow.db"], "not a URI"),
        (["--experiment", " "], "experiment"),
        (["--optimizer", "search", "--bounds", "finder.json"], "its own range test"),
        (["--epochs", "3"], "exists with other settings (epochs 2 → 3"),
        (["--schedules", "cosine,constant"], "schedules [constant,cosine] → [cosine,constant]"),
        (["--bounds", "too-high.json"], "LR bounds"),
        (["--batch-size", "32"], "batch_size 64 → 32"),
        (["--optimizer", "adam"], "optimizers [sgd] → [adam]"),
        (["--optimizer", "adam", "--bounds", "auto"], "optimizers [sgd] → [adam]"),
        (["--task", "friedman"], "task digits → friedman"),
    ],
)
def test_study_rejects_bad_input(in_made: Made, args: list[str], fragment: str) -> None:
    assert_one_line_usage_error(run_cli("study", *ok_args_with(args)), fragment)


def test_study_writes_nothing_when_the_dataset_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("study", "--task", "mnist", "--data-dir", str(tmp_path / "empty"), "--bounds", "auto")
    assert_one_line_usage_error(result, "mnist")
    assert not any(tmp_path.rglob("*.db")) and not (tmp_path / "mlartifacts").exists()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (None, "not found"),
        ("task: [digits\n", "not valid YAML"),
        ("task: digits\ntasks: mnist\n", "unknown key 'tasks'"),
        ("epochs: two\n", "epochs must be an integer"),
        ("- digits\n- mnist\n", "must be a mapping"),
        ("finder:\n  iterations: 10\n", "unknown key 'iterations' in the finder section"),
    ],
)
def test_study_rejects_bad_study_files(
    in_made: Made, tmp_path: Path, text: str | None, fragment: str
) -> None:
    path = tmp_path / "bad.yaml"
    if text is not None:
        path.write_text(text)
    result = run_cli("study", str(path), "--study-name", "ok")
    assert_one_line_usage_error(result, fragment)


def test_a_study_file_and_flags_merge(in_made: Made, tmp_path: Path) -> None:
    """The file's settings stand unless a flag is given: here the file's epochs (3) conflict."""
    path = tmp_path / "ok.yaml"
    path.write_text("epochs: 3\nschedules: [constant, cosine]\nbounds: finder.json\nn_trials: 2\n")
    result = run_cli("study", str(path), "--study-name", "ok", "--pruner", "none", "--device", "cpu")
    assert_one_line_usage_error(result, "epochs 2 → 3")
    result = run_cli("study", str(path), "--study-name", "ok", "--epochs", "2", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "nothing to run" in result.stderr


# -------------------------------------------------------------------------------------------- best
def test_best_writes_the_contract_file(in_made: Made, tmp_path: Path) -> None:
    out = tmp_path / "best.json"
    result = run_cli("best", "--storage", "sqlite:///lrtune.db", "--study-name", "ok", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert "confirmed on 3 fresh seeds, gain over the baseline +" in result.stderr
    data = json.loads(out.read_text())
    assert set(data) == BEST_KEYS | CONFIRMED_KEYS
    assert data["study"] == "ok" and data["epochs"] == 2 and data["batch_size"] == 64
    assert data["metric"] == "val_accuracy" and data["confirmed"] is True
    assert data["optimizer"] == {"name": "sgd", "momentum": 0.9}
    study = optuna.load_study(study_name="ok", storage="sqlite:///lrtune.db")
    assert data["schedule"] == study.trials[data["trial"]].user_attrs["plan"]["schedule"]
    assert load_schedule(out) == data["schedule"]
    # The confirmed figures: the mean over the fresh seeds, the baseline (trial 0) on the same seeds.
    confirm = optuna.load_study(study_name="ok:confirm", storage="sqlite:///lrtune.db")
    runs = {(t.user_attrs["confirms"], t.user_attrs["seed"]): t.value for t in confirm.trials}
    seeds = data["seeds"]
    assert len(seeds) == 3 and not set(seeds) & {0, 1}  # no search trial trained with them
    assert data["values"] == [runs[(data["trial"], s)] for s in seeds]
    assert data["value"] == data["mean"] == pytest.approx(sum(data["values"]) / 3)
    baseline = data["baseline"]
    assert baseline["trial"] == 0 and baseline["seeds"] == seeds
    assert baseline["schedule"] == study.trials[0].user_attrs["plan"]["schedule"]
    assert baseline["schedule"]["type"] == "cosine" and baseline["schedule"]["base_lr"] == 0.1
    assert baseline["values"] == [runs[(0, s)] for s in seeds]
    assert data["gain"] == pytest.approx(data["mean"] - baseline["mean"])
    assert data["gain"] >= 0  # the winner is the best mean, the baseline among the candidates
    assert [p.name for p in tmp_path.iterdir()] == ["best.json"]  # no temporary file left

    printed = run_cli("best", "--study-name", "ok")
    assert printed.exit_code == 0
    assert json.loads(printed.stdout) == data


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--study-name", "nope"], "no study named 'nope'"),
        ([], "pass --study-name"),  # two studies in the storage
        (["--study-name", "diverged"], "no complete trial"),
        (["--storage", "sqlite:///absent.db", "--study-name", "ok"], "no study storage at 'absent.db'"),
        (["--storage", "nodialect://bob:hunter2@db/x", "--study-name", "ok"], "cannot open"),
        (["--study-name", "ok", "--out", "no/such/folder/best.json"], "does not exist"),
        (["--study-name", "ok", "--out", "mlartifacts"], "is a folder"),
    ],
)
def test_best_rejects_bad_input(in_made: Made, args: list[str], fragment: str) -> None:
    assert_one_line_usage_error(run_cli("best", *args), fragment)


# --------------------------------------------------------------------------------------- schedules
def test_schedules_lists_every_registered_type() -> None:
    result = run_cli("schedules")
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.stdout.splitlines() if line and not line[0].isspace()}
    assert set(REGISTRY) <= listed
    assert "decay_rate" in result.stdout and "warmup_steps" in result.stdout


def test_schedules_plot_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "schedules.png"
    result = run_cli("schedules", "--plot", str(out), "--steps", "200")
    assert result.exit_code == 0, result.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert_one_line_usage_error(run_cli("schedules", "--plot", str(tmp_path / "s.txt")), ".png")
    assert_one_line_usage_error(
        run_cli("schedules", "--plot", str(tmp_path / "x" / "s.png")), "does not exist"
    )
    assert_one_line_usage_error(run_cli("schedules", "--steps", "2"), "--steps")
    assert [p.name for p in tmp_path.iterdir()] == ["schedules.png"]


def test_help_lists_all_five_commands() -> None:
    result = run_cli("--help")
    assert result.exit_code == 0
    commands = result.stdout.split("Commands:")[1]
    assert [line.split()[0] for line in commands.strip().splitlines()] == [
        "best",
        "find",
        "schedules",
        "study",
        "ui",
    ]
    study_help = run_cli("study", "--help").stdout
    assert "short-horizon bias" in study_help and "Wu et al. 2018" in study_help
    for flag in ("--n-trials", "--bounds", "--sampler", "--pruner", "--schedules", "--optimizer"):
        assert flag in study_help


@pytest.mark.slow
def test_study_and_best_as_real_subprocesses(tmp_path: Path) -> None:
    (tmp_path / "finder.json").write_text(json.dumps({"suggested_lr": 0.1, "lr_low": 0.02, "lr_high": 0.5}))
    (tmp_path / "runs").mkdir()

    def lrtune(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lrtune", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
            check=False,
        )

    study = lrtune(
        *["study", "--n-trials", "2", "--epochs", "1", "--bounds", "finder.json", "--schedules", "cosine"],
        *["--tracking-uri", "sqlite:///runs/mlflow.db", "--device", "cpu"],
    )
    assert study.returncode == 0, study.stderr
    assert "[2/2] trial 1" in study.stdout and "lrtune-digits: 2 complete" in study.stdout
    assert "Trial 0 finished" not in study.stderr  # Optuna's own lines give way to ours
    assert (tmp_path / "runs" / "mlartifacts").is_dir() and not (tmp_path / "mlartifacts").exists()
    best = lrtune("best", "--out", "best.json")
    assert best.returncode == 0, best.stderr
    assert load_schedule(tmp_path / "best.json")["type"] == "cosine"
    bad = lrtune("study", "--epochs", "0")
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("Error: ") and "Traceback" not in bad.stderr
