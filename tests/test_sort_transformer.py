"""The built-in sequence task ``sort-transformer``: its data, its model, and the CLI end to end on it."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner, Result

from lrtune.cli import cli
from lrtune.config import load_study_file
from lrtune.data import DeviceDictBatches, make_loader
from lrtune.datasets import sort_splits
from lrtune.errors import TaskError
from lrtune.models import TinyTransformer
from lrtune.schedules import load_schedule
from lrtune.tasks import SORT_LENGTH, SORT_VOCAB, load_task

STUDY_FILE = Path(__file__).resolve().parents[1] / "studies" / "sort-transformer.yaml"


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_sort_splits_are_sorted_copies_deterministic_and_disjoint() -> None:
    train, val, test = sort_splits(n_train=50, n_val=20, n_test=10, length=7, vocab=5, seed=3)
    assert (len(train), len(val), len(test)) == (50, 20, 10)
    for split in (train, val, test):
        ids, labels = split.tensors["input_ids"], split.tensors["labels"]
        assert ids.shape[1] == 7 and int(ids.max()) < 5 and int(ids.min()) >= 0
        assert torch.equal(labels, ids.sort(dim=1).values)
    again = sort_splits(n_train=50, n_val=20, n_test=10, length=7, vocab=5, seed=3)[0]
    assert torch.equal(again.tensors["input_ids"], train.tensors["input_ids"])
    other = sort_splits(n_train=50, n_val=20, n_test=10, length=7, vocab=5, seed=4)[0]
    assert not torch.equal(other.tensors["input_ids"], train.tensors["input_ids"])
    assert not torch.equal(train.tensors["input_ids"][:10], test.tensors["input_ids"])
    with pytest.raises(TaskError, match="vocab >= 2"):
        sort_splits(vocab=1)
    with pytest.raises(TaskError, match="n_val >= 1"):
        sort_splits(n_val=0)


def test_the_task_has_dict_batches_a_model_side_loss_and_token_accuracy() -> None:
    task = load_task("sort-transformer")
    assert task.loss is None and task.metric == "accuracy" and task.batch_size == 64
    assert (len(task.train), len(task.val)) == (8000, 1000)
    loader = make_loader(task.train, batch_size=task.batch_size, shuffle=True, device="cpu")
    assert isinstance(loader, DeviceDictBatches) and len(loader) == 125
    batch = next(iter(loader))
    assert batch["input_ids"].shape == (64, SORT_LENGTH)
    torch.manual_seed(0)
    model = task.model()
    assert isinstance(model, TinyTransformer) and not model.encoder.layers[0].norm_first  # post-LN
    out = model(**batch)
    assert out.logits.shape == (64, SORT_LENGTH, SORT_VOCAB)
    assert out.loss is not None and abs(out.loss.item() - torch.log(torch.tensor(16.0)).item()) < 1.0


@pytest.mark.slow
def test_find_on_the_sequence_task_writes_a_suggestion(workdir: Path) -> None:
    result = run_cli(
        *["find", "--task", "sort-transformer", "--optimizer", "adam", "--num-iter", "40"],
        *["--repeats", "1", "--batch-size", "16", "--device", "cpu", "--no-mlflow", "--out", "found"],
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert "sort-transformer" in result.stdout
    data = json.loads((workdir / "found" / "finder.json").read_text())
    assert data["num_iter"] == 40 and len(data["lrs"]) == len(data["losses"]) >= 10
    assert data["lr_low"] <= data["suggested_lr"] <= data["lr_high"]


def test_the_study_file_searches_inverse_sqrt_against_warmed_up_schedules() -> None:
    settings = load_study_file(STUDY_FILE)
    assert settings["task"] == "sort-transformer" and settings["optimizer"] in ("adam", "adamw")
    assert set(settings["schedules"]) == {"inverse_sqrt", "cosine", "one_cycle"}
    assert settings["warmup_max_fraction"] > 0


@pytest.mark.slow
def test_a_small_study_on_the_sequence_task(workdir: Path) -> None:
    found = run_cli(
        *["find", "--task", "sort-transformer", "--optimizer", "adam", "--num-iter", "30"],
        *["--repeats", "1", "--batch-size", "16", "--device", "cpu", "--no-mlflow", "--out", "found"],
    )
    assert found.exit_code == 0, found.output + found.stderr
    study = run_cli(
        *["study", str(STUDY_FILE), "--n-trials", "2", "--epochs", "1", "--pruner", "none"],
        *["--bounds", "found/finder.json", "--storage", "sqlite:///study.db"],
        *["--tracking-uri", "sqlite:///mlflow.db"],
    )
    assert study.exit_code == 0, study.output + study.stderr
    loaded = optuna.load_study(study_name="sort-transformer", storage="sqlite:///study.db")
    complete = [t for t in loaded.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2
    assert all(0.0 <= t.value <= 1.0 for t in complete)  # validation token accuracy
    best = run_cli(
        *["best", "--storage", "sqlite:///study.db", "--study-name", "sort-transformer", "--out", "best.json"]
    )
    assert best.exit_code == 0, best.output + best.stderr
    spec = load_schedule(workdir / "best.json")
    assert spec["type"] in {"inverse_sqrt", "cosine", "one_cycle"}
    assert json.loads((workdir / "best.json").read_text())["optimizer"]["name"] == "adam"
