"""Dict batches and models that return their loss: the forward pass, the finder and the trainer on them.

The model here is a small Transformer of our own (``torch.nn`` only) that is called as
``model(input_ids=..., labels=...)`` and returns a dict with ``loss`` and ``logits``, like the models
of popular NLP libraries, which lrtune does not depend on.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import Tensor, nn

from lrtune import LRFinder, Task
from lrtune.cli import cli
from lrtune.data import DeviceDictBatches, TensorDictDataset
from lrtune.errors import TaskError, UsageError
from lrtune.forward import Kwargs, forward_loss, output_field, samples_in, split_batch
from lrtune.optimizers import OptimizerSpec
from lrtune.trainer import TrainSettings, evaluate, fit

VOCAB, LENGTH = 8, 6


class DictTransformer(nn.Module):
    """Embedding, one Transformer encoder layer (with dropout), a head; returns ``{"loss", "logits"}``."""

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.position = nn.Parameter(torch.randn(1, LENGTH, 16) * 0.1)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(16, VOCAB)

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        logits = self.head(self.encoder(self.embed(input_ids) + self.position))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return out


def sort_data(n: int, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, LENGTH), generator=g)
    return {"input_ids": ids, "labels": ids.sort(dim=1).values}


def dict_batches(data: dict[str, Tensor], size: int) -> list[dict[str, Tensor]]:
    n = len(data["labels"])
    return [{k: v[i : i + size] for k, v in data.items()} for i in range(0, n, size)]


def token_ce(outputs: dict[str, Tensor], labels: Tensor) -> Tensor:
    """The same loss as the model's own, computed outside it from the logits."""
    return F.cross_entropy(outputs["logits"].flatten(0, 1), labels.flatten())


def capture(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    return {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "opt": copy.deepcopy(opt.state_dict()),
        "modes": [m.training for m in model.modules()],
        "rng": (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()),
    }


def assert_unchanged(before: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer) -> None:
    after = capture(model, opt)
    assert before["model"].keys() == after["model"].keys()
    for key, value in before["model"].items():
        assert torch.equal(value, after["model"][key]), key
    for a, b in zip(before["grads"], after["grads"], strict=True):
        assert (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
    state_a, state_b = before["opt"]["state"], after["opt"]["state"]
    assert state_a.keys() == state_b.keys()
    for index, entry in state_a.items():
        for key, value in entry.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_b[index][key])), (index, key)
    assert before["opt"]["param_groups"] == after["opt"]["param_groups"]
    assert before["modes"] == after["modes"]
    assert before["rng"][0] == after["rng"][0]
    assert np.array_equal(before["rng"][1], after["rng"][1])
    assert torch.equal(before["rng"][2], after["rng"][2])


def warmed_setup(dropout: float = 0.1) -> tuple[DictTransformer, torch.optim.Optimizer]:
    """A model and an Adam optimizer with state and grads left behind, one submodule in eval mode."""
    torch.manual_seed(0)
    model = DictTransformer(dropout)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for batch in dict_batches(sort_data(32, seed=9), 16):
        opt.zero_grad()
        model(**batch)["loss"].backward()
        opt.step()
    model(**sort_data(16, seed=8))["loss"].backward()  # leave grads behind
    model.head.eval()
    return model, opt


QUIET = {"start_lr": 1e-5, "end_lr": 1.0, "num_iter": 40, "poll_every": 5}


# --------------------------------------------------------------------------- the forward pass


def test_pairs_and_mappings_split_into_inputs_and_targets() -> None:
    x, y = torch.zeros(3, 2), torch.ones(3)
    assert split_batch((x, y), "b") == (x, y)
    batch = {"input_ids": x, "labels": y}
    inputs, targets = split_batch(batch, "b")
    assert isinstance(inputs, Kwargs) and inputs == batch and targets is y
    assert split_batch(inputs, "b")[0] is inputs  # split once, kept as is
    assert split_batch({"input_ids": x}, "b")[1] is None
    assert samples_in({"input_ids": x}, None) == 3 and samples_in(x, y[:2]) == 2
    with pytest.raises(UsageError, match="pair or a mapping"):
        split_batch([x, y, y], "b")


def test_the_loss_comes_from_the_output_attribute_or_key_or_the_criterion() -> None:
    class WithAttribute:
        loss = torch.tensor(2.0)

    assert output_field(WithAttribute(), "loss") is WithAttribute.loss
    assert output_field({"loss": 3}, "loss") == 3
    torch.manual_seed(0)
    model = DictTransformer(dropout=0.0)
    inputs, labels = split_batch(sort_data(4), "b")
    outputs, own = forward_loss(model, None, inputs, labels)
    _, outside = forward_loss(model, token_ce, inputs, labels)
    assert set(outputs) == {"loss", "logits"} and torch.equal(own, outside)


def test_a_pair_whose_inputs_are_a_dict_still_calls_model_with_one_argument() -> None:
    class TwoInputs(nn.Module):
        def forward(self, features: dict[str, Tensor]) -> Tensor:
            return features["a"] + features["b"]

    pair = ({"a": torch.ones(2, 1), "b": torch.ones(2, 1)}, torch.zeros(2, 1))
    inputs, targets = split_batch(pair, "b")
    outputs, loss = forward_loss(TwoInputs(), F.mse_loss, inputs, targets)
    assert torch.equal(outputs, torch.full((2, 1), 2.0)) and loss.item() == 4.0


def test_bad_batch_shapes_are_one_line_usage_errors() -> None:
    model = DictTransformer()
    no_labels, _ = split_batch({"input_ids": sort_data(4)["input_ids"]}, "b")
    with pytest.raises(UsageError, match=r"batch\['labels'\].*keys \['input_ids'\]") as info:
        forward_loss(model, token_ce, no_labels, None)
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="must return its loss") as info:
        forward_loss(model, None, no_labels, None)  # no labels: the model returns no loss
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="must be mappings"):
        forward_loss(nn.Linear(2, 1), None, torch.zeros(1, 2), torch.zeros(1, 1))


# --------------------------------------------------------------------------- the finder


def test_finder_suggests_a_rate_for_a_model_that_returns_its_loss() -> None:
    torch.manual_seed(0)
    model = DictTransformer()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DeviceDictBatches(sort_data(512), batch_size=32, shuffle=True)
    result = LRFinder(model, opt, None).range_test(loader, start_lr=1e-5, end_lr=10.0, num_iter=100)
    assert result.diverged  # Adam at lr 10 blows up
    assert 0 < result.lr_low <= result.suggested_lr <= result.lr_high < 10.0
    assert 1e-4 < result.suggested_lr < 1.0
    assert min(result.losses) < result.losses[0] - 0.1  # the loss fell before it diverged


def test_finder_accumulation_on_dict_batches_matches_a_batch_twice_as_large() -> None:
    data = sort_data(96)
    torch.manual_seed(0)
    base = DictTransformer(dropout=0.0)
    curves = []
    for size, acc in ((8, 2), (16, 1)):
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        result = LRFinder(model, opt, None).range_test(
            dict_batches(data, size), accumulation_steps=acc, stop_on_divergence=False, **QUIET
        )
        curves.append(result.curves[0])
    np.testing.assert_allclose(curves[0], curves[1], rtol=1e-5, atol=1e-6)
    assert curves[0][0] != curves[0][-1]  # the updates did change the loss


@pytest.mark.parametrize("criterion", [None, token_ce])
def test_finder_restores_model_optimizer_and_rngs_bit_for_bit(criterion: Any) -> None:
    model, opt = warmed_setup()
    before = capture(model, opt)
    train = DeviceDictBatches(sort_data(128), batch_size=16, shuffle=True)
    val = dict_batches(sort_data(64, seed=1), 16)
    result = LRFinder(model, opt, criterion).range_test(
        train, repeats=2, val_loader=val, val_every=2, **{**QUIET, "num_iter": 30}
    )
    assert result.loss_source == "val" and len(result.lrs) >= 5
    assert_unchanged(before, model, opt)


def test_finder_restores_everything_when_the_model_breaks_mid_sweep() -> None:
    model, opt = warmed_setup()
    before = capture(model, opt)
    calls = 0
    forward = model.forward

    def breaking(**batch: Tensor) -> dict[str, Tensor]:
        nonlocal calls
        calls += 1
        if calls == 13:
            raise KeyboardInterrupt
        return forward(**batch)

    model.forward = breaking  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        LRFinder(model, opt, None).range_test(dict_batches(sort_data(64), 16), **QUIET)
    del model.forward
    assert calls == 13
    assert_unchanged(before, model, opt)


def test_training_after_a_dict_range_test_is_bit_identical_to_training_without_it() -> None:
    data = sort_data(64)

    def train(run_finder: bool) -> list[Tensor]:
        torch.manual_seed(5)
        model = DictTransformer()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loader = DeviceDictBatches(data, batch_size=16, shuffle=True, seed=3)
        if run_finder:
            LRFinder(model, opt, None).range_test(loader, repeats=2, num_iter=20)
        for batch in loader:
            opt.zero_grad()
            model(**batch)["loss"].backward()
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(train(True), train(False), strict=True):
        assert torch.equal(a, b)


def test_finder_errors_on_dict_batches_are_one_line() -> None:
    model, opt = warmed_setup()
    unlabelled = [{"input_ids": sort_data(16)["input_ids"]}]
    with pytest.raises(UsageError, match=r"batch\['labels'\]"):
        LRFinder(model, opt, token_ce).range_test(unlabelled, **QUIET)
    with pytest.raises(UsageError, match="must return its loss"):
        LRFinder(model, opt, None).range_test(unlabelled, **QUIET)
    with pytest.raises(UsageError, match="must be mappings"):
        LRFinder(nn.Linear(2, 1), torch.optim.SGD(nn.Linear(2, 1).parameters()), None).range_test(
            [(torch.zeros(4, 2), torch.zeros(4, 1))], **QUIET
        )
    with pytest.raises(UsageError, match="pair or a mapping"):
        LRFinder(model, opt, None).range_test([torch.zeros(2)], **QUIET)
    with pytest.raises(UsageError, match="criterion must be callable or None"):
        LRFinder(model, opt, "mse")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the trainer


def dict_task(**changes: Any) -> Task:
    fields: dict[str, Any] = {
        "name": "dict-sort",
        "model": DictTransformer,
        "train": TensorDictDataset(sort_data(256)),
        "val": TensorDictDataset(sort_data(64, seed=1)),
        "loss": None,
        "batch_size": 32,
    }
    return Task(**{**fields, **changes})


def test_trainer_on_dict_batches_learns_and_reports_token_accuracy() -> None:
    settings = TrainSettings(epochs=3, device="cpu", seed=1)
    result = fit(dict_task(), optimizer=OptimizerSpec("adam"), base_lr=3e-3, settings=settings)
    first, last = result.epochs[0], result.final()
    assert not result.diverged and last.steps == 3 * 8
    assert last.train_loss < first.train_loss
    assert last.val_metric is not None and 1 / VOCAB < last.val_metric <= 1.0
    # the metric is the fraction of tokens whose argmax is the label, weighted over batches
    torch.manual_seed(0)
    model = DictTransformer()
    val = sort_data(64, seed=1)
    loss, acc = evaluate(model, dict_batches(val, 20), dict_task())
    with torch.no_grad():
        out = model(**val)
    assert loss == pytest.approx(out["loss"].item(), rel=1e-5)
    assert acc == pytest.approx((out["logits"].argmax(-1) == val["labels"]).float().mean().item(), rel=1e-6)


def test_trainer_with_a_criterion_on_dict_batches_matches_the_model_own_loss() -> None:
    settings = TrainSettings(epochs=2, device="cpu", seed=2)
    own = fit(dict_task(), optimizer=OptimizerSpec("sgd"), base_lr=0.1, settings=settings)
    outside = fit(dict_task(loss=token_ce), optimizer=OptimizerSpec("sgd"), base_lr=0.1, settings=settings)
    assert [e.train_loss for e in own.epochs] == [e.train_loss for e in outside.epochs]
    assert [e.val_metric for e in own.epochs] == [e.val_metric for e in outside.epochs]


def test_trainer_errors_on_dict_batches_are_one_line_task_errors() -> None:
    settings = TrainSettings(epochs=1, device="cpu")
    unlabelled = TensorDictDataset({"input_ids": sort_data(32)["input_ids"]})
    cases = [
        (dict_task(train=unlabelled, loss=token_ce), r"batch\['labels'\]"),
        (dict_task(train=unlabelled), "must return its loss"),
        (dict_task(val=unlabelled, metric=None, loss=None), "must return its loss"),
    ]
    for task, fragment in cases:
        with pytest.raises(TaskError, match=fragment) as info:
            fit(task, optimizer=OptimizerSpec("adam"), base_lr=1e-3, settings=settings)
        assert "\n" not in str(info.value) and str(info.value).startswith("task 'dict-sort'")


def test_a_callable_metric_gets_the_outputs_and_the_labels() -> None:
    seen: list[tuple[Any, Tensor]] = []

    def exact_match(outputs: dict[str, Tensor], labels: Tensor) -> Tensor:
        seen.append((outputs, labels))
        return (outputs["logits"].argmax(-1) == labels).all(dim=1).float().mean()

    task = dict_task(metric=exact_match)
    result = fit(
        task, optimizer=OptimizerSpec("adam"), base_lr=1e-3, settings=TrainSettings(epochs=1, device="cpu")
    )
    assert seen and set(seen[0][0]) == {"loss", "logits"} and seen[0][1].shape[1] == LENGTH
    assert result.final().val_metric is not None and 0.0 <= result.final().val_metric <= 1.0


# --------------------------------------------------------------------------- the CLI

UNLABELLED_TASK = """
import torch
from lrtune import Task
from lrtune.data import TensorDictDataset


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(8, 4)

    def forward(self, input_ids, labels=None):
        return {"logits": self.embed(input_ids)}


def make_task():
    ids = TensorDictDataset({"input_ids": torch.randint(0, 8, (64, 6))})
    return Task(name="unlabelled", model=Model, train=ids, val=ids, loss=LOSS)
"""


@pytest.mark.parametrize(
    ("loss", "fragment"),
    [("torch.nn.functional.cross_entropy", "batch['labels']"), ("None", "must return its loss")],
)
def test_find_on_a_bad_dict_task_is_one_line_and_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loss: str, fragment: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = f"dicttask_{'none' if loss == 'None' else 'ce'}"
    (tmp_path / f"{module}.py").write_text(UNLABELLED_TASK.replace("LOSS", loss))
    result = CliRunner().invoke(
        cli, ["find", "--task", f"{module}:make_task", "--no-mlflow", "--num-iter", "20"]
    )
    assert result.exit_code == 2, result.output + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], result.stderr
    assert not (tmp_path / "lrtune-find").exists()  # nothing written
