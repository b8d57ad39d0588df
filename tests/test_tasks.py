"""Tests for lrtune.tasks: the Task contract, metrics, the offline built-in tasks and loading user tasks.

The data of the torchvision and image-folder tasks is tested in test_datasets.py, the models in
test_models.py.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from lrtune.errors import TaskError, UsageError
from lrtune.tasks import (
    TASKS,
    Task,
    accuracy,
    batch_metric,
    gaussian_nll,
    load_task,
    metric_name,
    metric_value,
)


def size(dataset: Any) -> int:
    return len(dataset)


def tiny_task(**overrides: Any) -> Task:
    data = TensorDataset(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    kwargs: dict[str, Any] = {"name": "tiny", "model": lambda: nn.Linear(2, 2), "train": data, "val": data}
    kwargs.update(overrides)
    return Task(**kwargs)


# --------------------------------------------------------------------------- Task


def test_task_defaults_match_the_contract() -> None:
    task = tiny_task()
    assert task.loss is F.cross_entropy
    assert task.metric == "accuracy"
    assert task.batch_size == 128
    assert task.metric_mode == "max"
    assert task.test is None  # optional: user tasks need no test split
    assert [f.name for f in dataclasses.fields(Task)][-1] == "test"
    with pytest.raises(AttributeError):
        task.batch_size = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": ""}, "non-empty name"),
        ({"model": nn.Linear(2, 2).weight}, "model must be a callable"),
        ({"train": [1, 2][:0]}, "train dataset is empty"),
        ({"val": iter([1])}, "val dataset must have a length"),
        ({"test": [1][:0]}, "test dataset is empty"),
        ({"test": iter([1])}, "test dataset must have a length"),
        ({"loss": "mse"}, "loss must be callable"),
        ({"metric": "f1"}, "metric must be 'accuracy'"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"batch_size": 2.0}, "batch_size must be an integer >= 1"),
        ({"batch_size": True}, "batch_size must be an integer >= 1"),
        ({"metric_mode": "up"}, "metric_mode must be 'max' or 'min'"),
        ({"metric_mode": "min"}, "accuracy is maximized"),
    ],
)
def test_task_rejects_bad_fields(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(TaskError, match=message) as info:
        tiny_task(**overrides)
    assert isinstance(info.value, UsageError)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


def test_task_accepts_callable_metric_minimized() -> None:
    def mean_abs_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (outputs - targets).abs().mean()

    task = tiny_task(metric=mean_abs_error, metric_mode="min", loss=F.l1_loss)
    assert metric_name(task) == "mean_abs_error"


# --------------------------------------------------------------------------- metrics


def test_accuracy_multiclass_binary_and_one_hot() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    assert accuracy(logits, labels).item() == pytest.approx(0.5)
    assert accuracy(logits, F.one_hot(labels, 3).float()).item() == pytest.approx(0.5)
    binary = torch.tensor([[1.5], [-0.5], [0.2]])
    assert accuracy(binary, torch.tensor([[1], [1], [1]])).item() == pytest.approx(2 / 3)
    assert accuracy(binary.flatten(), torch.tensor([1, 0, 0])).item() == pytest.approx(2 / 3)
    segmentation = torch.zeros(1, 2, 2, 2)
    segmentation[0, 1, 0, :] = 1.0  # class 1 on the top row
    assert accuracy(segmentation, torch.tensor([[[1, 1], [0, 1]]])).item() == pytest.approx(0.75)


def test_metric_names() -> None:
    assert metric_name(tiny_task()) == "accuracy"
    assert metric_name(tiny_task(metric=None)) is None
    assert metric_name(tiny_task(metric=lambda o, t: 0.0)) == "metric"


def test_batch_metric_stays_a_tensor_on_the_device() -> None:
    outputs, targets = torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([1, 1])
    value = batch_metric(tiny_task(), outputs, targets)
    assert isinstance(value, torch.Tensor) and value.shape == () and value.dtype == torch.float32
    assert value.item() == pytest.approx(0.5)
    assert batch_metric(tiny_task(metric=None), outputs, targets) is None
    as_float = batch_metric(tiny_task(metric=lambda o, t: 0.25), outputs, targets)
    assert as_float is not None and as_float.item() == pytest.approx(0.25)
    assert metric_value(tiny_task(), outputs, targets) == pytest.approx(0.5)
    assert metric_value(tiny_task(metric=None), outputs, targets) is None


def test_batch_metric_rejects_non_scalar_results() -> None:
    with pytest.raises(TaskError, match=r"must return a scalar, got a tensor of shape \(2,\)"):
        batch_metric(tiny_task(metric=lambda o, t: o[:, 0]), torch.zeros(2, 2), torch.zeros(2))
    with pytest.raises(TaskError, match="must return a float or a 0-dim tensor, got str"):
        batch_metric(tiny_task(metric=lambda o, t: "high"), torch.zeros(2, 2), torch.zeros(2))


def test_gaussian_nll_closed_form() -> None:
    torch.manual_seed(0)
    outputs, targets = torch.randn(8, 2), torch.randn(8, 1)
    mean, log_var = outputs[:, 0], outputs[:, 1]
    by_hand = 0.5 * (math.log(2 * math.pi) + log_var + (targets[:, 0] - mean) ** 2 / log_var.exp())
    assert gaussian_nll(outputs, targets).item() == pytest.approx(by_hand.mean().item(), rel=1e-6)
    torch_nll = F.gaussian_nll_loss(mean, targets[:, 0], log_var.exp(), full=True)
    assert gaussian_nll(outputs, targets).item() == pytest.approx(torch_nll.item(), rel=1e-5)
    # A sharp, correct prediction has a negative NLL.
    sharp = torch.tensor([[0.3, math.log(0.01)]])
    assert gaussian_nll(sharp, torch.tensor([[0.3]])).item() == pytest.approx(
        0.5 * math.log(2 * math.pi * 0.01)
    )


# --------------------------------------------------------------------------- offline built-in tasks


def rows(dataset: Any) -> set[bytes]:
    return {row.numpy().tobytes() for row in dataset.tensors[0]}


def test_digits_is_the_offline_default() -> None:
    task = load_task("digits")
    assert (task.name, size(task.train), size(task.val), size(task.test), task.batch_size) == (
        "digits", 1437, 180, 180, 64
    )  # fmt: skip
    x, y = task.train.tensors  # type: ignore[attr-defined]
    assert x.dtype == torch.float32 and x.shape == (1437, 64) and y.dtype == torch.int64
    assert x.min().item() >= 0.0 and x.max().item() == 1.0
    # Stratified: every class holds ~10% of its samples in validation and ~10% in test.
    val_counts = torch.bincount(task.val.tensors[1], minlength=10)  # type: ignore[attr-defined]
    test_counts = torch.bincount(task.test.tensors[1], minlength=10)  # type: ignore[union-attr]
    all_counts = val_counts + test_counts + torch.bincount(y, minlength=10)
    assert int(all_counts.sum()) == 1797
    assert torch.all((val_counts.float() / all_counts - 0.1).abs() < 0.015)
    assert torch.all((test_counts.float() / all_counts - 0.1).abs() < 0.015)
    assert torch.all((val_counts - test_counts).abs() <= 1)
    train_rows, val_rows, test_rows = rows(task.train), rows(task.val), rows(task.test)
    assert len(train_rows | val_rows | test_rows) == 1797  # disjoint (the 1,797 images are all distinct)
    again = load_task("digits")
    assert torch.equal(again.val.tensors[0], task.val.tensors[0])  # type: ignore[attr-defined]
    assert torch.equal(again.test.tensors[0], task.test.tensors[0])  # type: ignore[union-attr]
    assert task.model()(x[:5]).shape == (5, 10)
    assert task.loss is F.cross_entropy and task.metric == "accuracy"


@pytest.mark.parametrize(
    ("name", "outputs", "loss"), [("friedman", 1, F.mse_loss), ("friedman-nll", 2, gaussian_nll)]
)
def test_friedman_tasks(name: str, outputs: int, loss: Any) -> None:
    task = load_task(name)
    assert (size(task.train), size(task.val), size(task.test), task.metric, task.loss) == (
        3200, 400, 400, None, loss
    )  # fmt: skip
    x, y = task.train.tensors  # type: ignore[attr-defined]
    assert x.shape == (3200, 10) and y.shape == (3200, 1) and y.dtype == torch.float32
    train_rows, val_rows, test_rows = rows(task.train), rows(task.val), rows(task.test)
    assert len(train_rows | val_rows | test_rows) == 4000  # disjoint
    assert torch.equal(load_task(name).test.tensors[1], task.test.tensors[1])  # type: ignore[union-attr]
    assert abs(y.mean().item()) < 1e-5 and y.std().item() == pytest.approx(1.0, abs=1e-3)
    assert task.model()(x[:3]).shape == (3, outputs)


def test_mnist1d_tasks_generate_offline_with_fixed_disjoint_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    import random
    import socket

    import numpy as np

    from lrtune import datasets

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    datasets._mnist1d_arrays.cache_clear()  # generate for real, not from this process's cache
    random.seed(7)
    np.random.seed(7)
    py_state, np_state = random.getstate(), np.random.get_state()[1].copy()
    task = load_task("mnist1d")
    assert random.getstate() == py_state and np.array_equal(np.random.get_state()[1], np_state)
    assert (task.name, size(task.train), size(task.val), size(task.test), task.batch_size) == (
        "mnist1d", 3600, 400, 1000, 100
    )  # fmt: skip
    x, y = task.train.tensors  # type: ignore[attr-defined]
    assert x.shape == (3600, 40) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(y.tolist()) == set(range(10))
    train_rows, val_rows, test_rows = rows(task.train), rows(task.val), rows(task.test)
    assert len(train_rows | val_rows | test_rows) == 5000  # disjoint
    # Stratified: each class gives a tenth of its 4,000-set share to validation.
    val_counts = torch.bincount(task.val.tensors[1], minlength=10)  # type: ignore[attr-defined]
    all_counts = val_counts + torch.bincount(y, minlength=10)
    assert torch.all((val_counts.float() - all_counts.float() / 10).abs() <= 1)
    cnn = load_task("mnist1d-cnn")  # the same data from the cache, a different model
    assert cnn.name == "mnist1d-cnn" and torch.equal(cnn.val.tensors[0], task.val.tensors[0])  # type: ignore[attr-defined]
    assert cnn.train.tensors[0] is not task.train.tensors[0]  # type: ignore[attr-defined]
    datasets._mnist1d_arrays.cache_clear()
    again = load_task("mnist1d")  # generated anew: the same sequences
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(again, split).tensors[0], getattr(task, split).tensors[0])
        assert torch.equal(getattr(again, split).tensors[1], getattr(task, split).tensors[1])
    assert task.model()(x[:3]).shape == (3, 10)
    assert cnn.model()(x[:3]).shape == (3, 10)
    assert sum(p.numel() for p in cnn.model().parameters()) < 10_000


def test_mnist1d_study_file_is_valid() -> None:
    from lrtune.config import build_config, load_study_file

    path = Path(__file__).resolve().parents[1] / "studies" / "mnist1d-cnn.yaml"
    lines = path.read_text().splitlines()
    header = lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]
    assert any("Time" in line for line in header) and any("Hardware" in line for line in header)
    config = build_config(load_study_file(path), {})
    assert (config.study_name, config.task, config.n_trials) == ("mnist1d-cnn", "mnist1d-cnn", 30)


def test_registry_lists_the_builtins_and_fails_loudly() -> None:
    assert set(TASKS) >= {
        "digits",
        "digits-finetune",
        "friedman",
        "friedman-nll",
        "mnist1d",
        "mnist1d-cnn",
        "sort-transformer",
        "mnist",
        "fashion-mnist",
        "cifar10",
    }
    with pytest.raises(TaskError, match=r"unknown task 'digit'; built-in tasks: digits, friedman") as info:
        load_task("digit")
    assert "module:function" in str(info.value)
    with pytest.raises(TaskError, match="must be a name or module:function"):
        load_task("  ")


# --------------------------------------------------------------------------- module:function


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user's project folder as the current directory; sys.path and sys.modules restored afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("usertask_"):
            del sys.modules[name]


def write_module(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


def test_user_task_from_the_current_folder(project: Path) -> None:
    write_module(
        project,
        "usertask_ok",
        """
        import torch
        from torch.utils.data import TensorDataset
        from lrtune import Task

        def make_task():
            data = TensorDataset(torch.zeros(8, 3), torch.zeros(8, dtype=torch.long))
            return Task(name="mine", model=lambda: torch.nn.Linear(3, 2), train=data, val=data, batch_size=4)

        class Factory:
            @staticmethod
            def build():
                return make_task()
        """,
    )
    task = load_task("usertask_ok:make_task")
    assert (task.name, task.batch_size, size(task.train)) == ("mine", 4, 8)
    assert load_task("usertask_ok:Factory.build").name == "mine"
    assert str(project) in sys.path


@pytest.mark.parametrize(
    ("body", "spec", "message"),
    [
        (None, "usertask_absent:make", r"cannot import module 'usertask_absent' .*not found in"),
        ("import usertask_dependency_x\n", "usertask_dep:make", r"importing module 'usertask_dep' failed: "
         r"ModuleNotFoundError: No module named 'usertask_dependency_x'"),
        ("1 / 0\n", "usertask_boom:make", r"importing module 'usertask_boom' failed: ZeroDivisionError"),
        ("raise SystemExit(3)\n", "usertask_exit:make", r"importing module 'usertask_exit' failed: SystemExit"),
        ("def build(): pass\n", "usertask_attr:make", r"module 'usertask_attr' has no attribute 'make'; "
         r"callables there: build"),
        ("make = 42\n", "usertask_value:make", r"usertask_value:make is a int, not a function"),
        ("def make():\n    raise ValueError('no data\\nsecond line')\n", "usertask_raise:make",
         r"usertask_raise:make\(\) raised ValueError: second line"),
        ("def make(n):\n    return n\n", "usertask_args:make", r"usertask_args:make\(\) raised TypeError"),
        ("def make():\n    return {'name': 'x'}\n", "usertask_dict:make",
         r"usertask_dict:make\(\) returned dict, expected a lrtune.Task"),
        ("", "usertask_spec:", r"must look like module:function"),
    ],
)  # fmt: skip
def test_user_task_failures_are_one_line(project: Path, body: str | None, spec: str, message: str) -> None:
    if body is not None:
        write_module(project, spec.split(":")[0], body)
    with pytest.raises(TaskError, match=message) as info:
        load_task(spec)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- mapping batches


def test_token_accuracy_skips_ignored_positions_and_falls_back_for_other_shapes() -> None:
    from lrtune.tasks import token_accuracy

    logits = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]]])  # predicts 0, 1, 2
    assert token_accuracy(logits, torch.tensor([[0, 2, 2]])).item() == pytest.approx(2 / 3)
    assert token_accuracy(logits, torch.tensor([[0, -100, 2]])).item() == 1.0
    assert token_accuracy(logits, torch.full((1, 3), -100)).item() == 0.0  # nothing to score
    assert token_accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0])).item() == 0.5


def test_metric_on_mapping_batches_reads_the_logits_and_needs_labels() -> None:
    logits = torch.tensor([[[3.0, 0.0], [0.0, 3.0]]])
    labels = torch.tensor([[0, 0]])
    task = tiny_task(loss=None)
    for outputs in ({"logits": logits, "loss": torch.tensor(1.0)}, logits):
        value = batch_metric(task, outputs, labels, mapping=True)
        assert value is not None and value.item() == 0.5
    with pytest.raises(TaskError, match="needs batch\\['labels'\\]"):
        batch_metric(task, {"logits": logits}, None, mapping=True)
    with pytest.raises(TaskError, match="needs the model's 'logits'"):
        batch_metric(task, {"loss": torch.tensor(1.0)}, labels, mapping=True)
    assert batch_metric(tiny_task(metric=None), {"loss": 1}, None, mapping=True) is None
    with pytest.raises(TaskError, match="loss must be callable\\(outputs, targets\\) or None"):
        tiny_task(loss="mse")
