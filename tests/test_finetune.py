"""The ``digits-finetune`` task: a pretrained body under a fresh head, and a study over its parts end to end."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner

import lrtune
from lrtune.cli import cli
from lrtune.finetune import FINETUNE_CLASSES, SHOTS, finetune_splits, pretrained_body
from lrtune.tasks import load_task

REPO = Path(__file__).resolve().parents[1]


def test_the_task_is_few_shot_on_the_new_classes_with_body_and_head() -> None:
    task = load_task("digits-finetune")
    _, y = task.train[:]
    assert len(task.train) == SHOTS * len(FINETUNE_CLASSES)
    assert torch.bincount(y).tolist() == [SHOTS] * 5
    _, y_val = task.val[:]
    assert set(y_val.tolist()) == {0, 1, 2, 3, 4}
    names = [name for name, _ in task.model().named_parameters()]
    assert names == [
        "body.0.weight",
        "body.0.bias",
        "body.2.weight",
        "body.2.bias",
        "head.weight",
        "head.bias",
    ]
    train, val, test = finetune_splits()
    # no training example is also a validation or test example, no validation example a test example
    seen = {tuple(row.tolist()) for row in train.tensors[0]}
    held = {tuple(row.tolist()) for row in val.tensors[0]}
    assert not any(tuple(row.tolist()) in seen for row in val.tensors[0])
    assert not any(tuple(row.tolist()) in seen | held for row in test.tensors[0])
    assert set(test.tensors[1].tolist()) == {0, 1, 2, 3, 4}


def test_pretraining_is_deterministic_cached_and_leaves_the_global_rng_alone() -> None:
    first = pretrained_body(0)
    assert pretrained_body(0) is first  # cached
    state = torch.get_rng_state()
    pretrained_body.cache_clear()
    again = pretrained_body(0)
    assert torch.equal(torch.get_rng_state(), state)
    assert again is not first and all(torch.equal(first[k], again[k]) for k in first)


def test_each_model_gets_the_pretrained_body_and_a_fresh_head() -> None:
    task = load_task("digits-finetune")
    body = pretrained_body(0)
    one, two = task.model(), task.model()
    for key, value in body.items():
        assert torch.equal(one.body.state_dict()[key], value)
    assert not torch.equal(one.head.weight, two.head.weight)  # fresh heads from the global RNG
    with torch.no_grad():
        one.body[0].weight.add_(1.0)  # training one model must not change the cached body
    assert torch.equal(task.model().body[0].weight, body["0.weight"])


@pytest.mark.slow
def test_a_study_over_the_parts_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    finder = {"suggested_lr": 0.05, "lr_low": 0.005, "lr_high": 0.3, "lrs": [], "losses": []}
    Path("finder.json").write_text(json.dumps(finder), encoding="utf-8")
    args = [
        "study", str(REPO / "studies" / "digits-finetune.yaml"), "--n-trials", "3", "--epochs", "2",
        "--bounds", "finder.json", "--storage", "sqlite:///s.db", "--tracking-uri", "sqlite:///m.db",
        "--confirm", "1", "--confirm-seeds", "2",
    ]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, (result.output, result.stderr)
    assert "lr factors" in result.output
    study = optuna.load_study(study_name="digits-finetune", storage="sqlite:///s.db")
    trials = study.get_trials()
    assert trials[0].params["lr_factor_body"] == 1.0  # the baseline: one global LR
    for trial in trials:
        plan = trial.user_attrs["plan"]
        assert plan["param_groups"] == {
            "body": {"pattern": r"^body\.", "lr_factor": trial.params["lr_factor_body"]}
        }

    out = CliRunner().invoke(cli, ["best", "--storage", "sqlite:///s.db", "--out", "best.json"])
    assert out.exit_code == 0, out.stderr
    best = json.loads(Path("best.json").read_text(encoding="utf-8"))
    factor = trials[best["trial"]].params["lr_factor_body"]  # the winner (confirmed on fresh seeds or not)
    assert best["param_groups"] == {"body": {"pattern": r"^body\.", "lr_factor": factor}}
    groups = lrtune.param_groups(load_task("digits-finetune").model(), "best.json")
    base = best["schedule"]["base_lr"]
    assert [(g["name"], g["lr"]) for g in groups] == [("default", base), ("body", base * factor)]

    resumed = CliRunner().invoke(cli, [*args[:2], "--param-group", "head=^head", *args[2:]])
    assert resumed.exit_code == 2 and "param_groups" in resumed.stderr, resumed.stderr
