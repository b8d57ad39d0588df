"""One forward pass: how a batch becomes the model's outputs and a loss.

Two batch shapes are accepted everywhere (the finder, :class:`~lrtune.tasks.Task`, the trainer):

- ``(inputs, targets)`` pairs: ``outputs = model(inputs)``, ``loss = criterion(outputs, targets)``;
- mappings (``{"input_ids": ..., "labels": ...}``): ``outputs = model(**batch)``. With no criterion the
  loss is the output's ``loss`` (attribute or key), as models that compute their own loss return it; with a
  criterion the targets are ``batch["labels"]``.

Internally a batch is always split into ``(inputs, targets)``: for a mapping, ``inputs`` is the mapping as
:class:`Kwargs` (so a pair whose inputs happen to be a dict still goes in as ``model(inputs)``) and
``targets`` its ``labels`` (``None`` when it has none).

Example:
    >>> import torch
    >>> class Scaled(torch.nn.Module):
    ...     def forward(self, x, labels):
    ...         return {"loss": ((2 * x - labels) ** 2).mean(), "logits": 2 * x}
    >>> inputs, targets = split_batch({"x": torch.ones(3), "labels": torch.zeros(3)}, "batches")
    >>> outputs, loss = forward_loss(Scaled(), None, inputs, targets)
    >>> loss.item(), samples_in(inputs, targets)
    (4.0, 3)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from lrtune.errors import UsageError

#: The key of a mapping batch that holds the targets.
LABELS_KEY = "labels"

#: The key (or attribute) of a model's output that holds its loss.
LOSS_KEY = "loss"

#: The key (or attribute) of a model's output that holds its class scores.
LOGITS_KEY = "logits"


class Kwargs(dict[str, Any]):
    """The keyword arguments of one mapping batch: the model is called as ``model(**kwargs)``."""


def split_batch(batch: Any, what: str) -> tuple[Any, Any]:
    """``(inputs, targets)`` of one batch: a pair as is, a mapping as ``(Kwargs(batch), batch.get("labels"))``.

    Raises:
        UsageError: the batch is neither a pair nor a mapping (``what`` names where it came from).
    """
    if isinstance(batch, Mapping):
        kwargs = batch if isinstance(batch, Kwargs) else Kwargs(batch)
        return kwargs, kwargs.get(LABELS_KEY)
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    size = f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
    raise UsageError(
        f"each batch of {what} must be an (inputs, targets) pair or a mapping passed as model(**batch), "
        f"got a {type(batch).__name__}{size}"
    )


def output_field(outputs: Any, name: str) -> Any:
    """``outputs.name`` or ``outputs[name]``; ``None`` when the output has neither.

    Example:
        >>> output_field({"loss": 1.0}, "loss"), output_field(object(), "loss")
        (1.0, None)
    """
    value = getattr(outputs, name, None)
    if value is None and isinstance(outputs, Mapping):
        value = outputs.get(name)
    return value


def forward(model: nn.Module | Callable[..., Any], inputs: Any) -> Any:
    """``model(**inputs)`` for the inputs of a mapping batch (:class:`Kwargs`), ``model(inputs)`` otherwise."""
    return model(**inputs) if isinstance(inputs, Kwargs) else model(inputs)


def forward_loss(
    model: nn.Module | Callable[..., Any],
    criterion: Callable[[Any, Any], Tensor] | None,
    inputs: Any,
    targets: Any,
) -> tuple[Any, Tensor]:
    """The model's outputs on one batch and the loss (not checked for shape).

    Args:
        model: the model.
        criterion: ``criterion(outputs, targets)``; ``None`` takes the loss the model returns (mapping
            batches only).
        inputs: a tensor (or any object the model takes), or the :class:`Kwargs` of a mapping batch (then
            ``model(**inputs)``), as :func:`split_batch` gives them.
        targets: the targets (``batch["labels"]`` for a mapping, possibly ``None``).

    Raises:
        UsageError: a mapping without ``labels`` while a criterion is given; no criterion and a batch
            that is not a mapping, or an output without a loss.
    """
    is_mapping = isinstance(inputs, Kwargs)
    if criterion is None and not is_mapping:
        raise UsageError(
            "with no criterion (loss=None) batches must be mappings passed as model(**batch) and the model "
            "must return its loss; got (inputs, targets) pairs: pass a criterion"
        )
    if criterion is not None and is_mapping and targets is None:
        raise UsageError(
            f"a criterion needs the targets in batch[{LABELS_KEY!r}], but the batch has keys "
            f"{sorted(map(str, inputs))}; add {LABELS_KEY!r}, or use no criterion if the model returns its loss"
        )
    outputs = forward(model, inputs)
    if criterion is not None:
        return outputs, criterion(outputs, targets)
    loss = output_field(outputs, LOSS_KEY)
    if loss is None:
        raise UsageError(
            f"with no criterion the model must return its loss (a {LOSS_KEY!r} attribute or key), "
            f"got a {type(outputs).__name__} without one; pass labels to the model or give a criterion"
        )
    return outputs, loss


def samples_in(inputs: Any, targets: Any) -> int:
    """Samples in one batch: the targets' first dimension, else the first tensor of a mapping's, else 1."""
    if isinstance(targets, Tensor) and targets.ndim > 0:
        return int(targets.shape[0])
    values = inputs.values() if isinstance(inputs, Mapping) else [inputs]
    for value in values:
        if isinstance(value, Tensor) and value.ndim > 0:
            return int(value.shape[0])
    return 1


__all__ = [
    "LABELS_KEY",
    "LOGITS_KEY",
    "LOSS_KEY",
    "Kwargs",
    "forward",
    "forward_loss",
    "output_field",
    "samples_in",
    "split_batch",
]
