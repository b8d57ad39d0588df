"""Tasks: a model factory, train/val(/test) data, a loss and a metric, by name or from the user's code.

A :class:`Task` is what ``lrtune find`` and ``lrtune study`` train. The built-in ones live in
:data:`TASKS`; ``digits`` (scikit-learn's bundled 8×8 digits) is the default and runs offline in
seconds. Users point ``--task`` at their own ``module:function`` returning a :class:`Task`. Built-in
tasks carry a ``test`` split that no study selects on, for honest final figures.

Example:
    >>> task = load_task("digits")
    >>> task.name, len(task.train), len(task.val), len(task.test), task.batch_size
    ('digits', 1437, 180, 180, 64)
    >>> sum(p.numel() for p in task.model().parameters())
    9610
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from lrtune.datasets import CIFAR10_MEAN as CIFAR10_MEAN  # re-exported
from lrtune.datasets import CIFAR10_STD as CIFAR10_STD  # re-exported
from lrtune.datasets import ImageFiles as ImageFiles  # re-exported
from lrtune.datasets import (
    cifar10_splits,
    digits_splits,
    fashion_mnist_splits,
    friedman_splits,
    imagefolder_splits,
    mnist1d_splits,
    mnist_splits,
    sort_splits,
)
from lrtune.errors import TaskError, one_line
from lrtune.forward import LOGITS_KEY, output_field
from lrtune.models import TinyTransformer, cifar_resnet18, conv1d_net, mlp, small_cnn

logger = logging.getLogger(__name__)

#: Where built-in datasets are read from (and downloaded to) unless the caller says otherwise.
DEFAULT_DATA_DIR = Path("data")

METRIC_MODES = ("max", "min")

#: Sequence length and vocabulary of the ``sort-transformer`` task.
SORT_LENGTH, SORT_VOCAB = 12, 16

MetricFn = Callable[[Tensor, Tensor], "float | Tensor"]


@dataclass(frozen=True)
class Task:
    """Everything needed to train and evaluate one model.

    Args:
        name: short name used in logs and run names.
        model: builds a fresh, untrained model on every call.
        train: training dataset of ``(inputs, targets)`` pairs, or of mappings (``{"input_ids": ...,
            "labels": ...}``) that the model takes as ``model(**batch)``.
        val: validation dataset, the same kind of items as ``train``.
        loss: ``loss(outputs, targets) -> scalar Tensor`` (mean over the batch); with mapping items the
            targets are ``batch["labels"]``. ``None``: the model returns its loss (the output's ``loss``
            attribute or key; mapping items only).
        metric: ``"accuracy"``, a callable ``metric(outputs, targets) -> float | 0-dim Tensor``
            (mean over the batch), or ``None`` (the study then optimizes the validation loss). With
            mapping items the targets are ``batch["labels"]`` and ``"accuracy"`` compares the argmax of
            the output's ``logits`` (over the last dimension) with them, skipping positions labelled
            ``-100`` (:func:`token_accuracy`).
        batch_size: training batch size.
        metric_mode: ``"max"`` when a larger metric is better, ``"min"`` otherwise.
        test: optional held-out dataset of ``(inputs, targets)`` pairs that no study selects on
            (studies and the finder use ``train`` and ``val`` only); for final, unbiased figures.
    """

    name: str
    model: Callable[[], nn.Module]
    train: Dataset[Any]
    val: Dataset[Any]
    loss: Callable[[Any, Any], Tensor] | None = F.cross_entropy
    metric: str | MetricFn | None = "accuracy"
    batch_size: int = 128
    metric_mode: str = "max"
    test: Dataset[Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise TaskError(f"a task needs a non-empty name, got {self.name=!r}")
        if not callable(self.model):
            raise TaskError(
                f"task {self.name!r}: model must be a callable building a fresh nn.Module, "
                f"got {type(self.model).__name__}"
            )
        for split in ("train", "val", "test"):
            dataset = getattr(self, split)
            if split == "test" and dataset is None:
                continue
            try:
                size = len(dataset)
            except TypeError:
                raise TaskError(
                    f"task {self.name!r}: the {split} dataset must have a length "
                    f"(a map-style Dataset), got {type(dataset).__name__}"
                ) from None
            if size < 1:
                raise TaskError(f"task {self.name!r}: the {split} dataset is empty")
        if self.loss is not None and not callable(self.loss):
            raise TaskError(
                f"task {self.name!r}: loss must be callable(outputs, targets) or None, "
                f"got {type(self.loss).__name__}"
            )
        if not (self.metric is None or self.metric == "accuracy" or callable(self.metric)):
            raise TaskError(
                f"task {self.name!r}: metric must be 'accuracy', a callable or None, got {self.metric=!r}"
            )
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise TaskError(
                f"task {self.name!r}: batch_size must be an integer >= 1, got {self.batch_size=!r}"
            )
        if self.metric_mode not in METRIC_MODES:
            raise TaskError(
                f"task {self.name!r}: metric_mode must be 'max' or 'min', got {self.metric_mode=!r}"
            )
        if self.metric == "accuracy" and self.metric_mode != "max":
            raise TaskError(
                f"task {self.name!r}: accuracy is maximized; use metric_mode='max', got {self.metric_mode=!r}"
            )


# --------------------------------------------------------------------------- metrics


def accuracy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Fraction of correct predictions, as a 0-dim float tensor on the outputs' device (no host sync).

    Class scores along dim 1 (``(N, C)`` or ``(N, C, ...)``) are compared by argmax; a single
    logit per sample (``(N,)`` or ``(N, 1)``) is thresholded at 0. One-hot or soft targets of the
    outputs' shape are reduced by argmax.

    Example:
        >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0])).item()
        0.5
    """
    if outputs.ndim >= 2 and outputs.shape[1] > 1:
        predicted = outputs.argmax(dim=1)
        if targets.shape == outputs.shape and targets.is_floating_point():
            targets = targets.argmax(dim=1)
    else:
        predicted = (outputs.reshape(outputs.shape[0], -1) > 0).long().reshape(targets.shape)
    return (predicted == targets).float().mean()


def token_accuracy(logits: Tensor, labels: Tensor, *, ignore_index: int = -100) -> Tensor:
    """Fraction of positions whose argmax over the last dimension is the label, skipping ``ignore_index``.

    The accuracy of mapping batches: ``logits`` of shape ``(..., C)`` against ``labels`` of shape
    ``(...)`` (one class per token of a sequence, or per sample). Other shapes go to :func:`accuracy`.

    Example:
        >>> logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [5.0, 0.0]]])  # one sequence of 3 tokens
        >>> token_accuracy(logits, torch.tensor([[0, 0, -100]])).item()
        0.5
    """
    if logits.ndim != labels.ndim + 1:
        return accuracy(logits, labels)
    keep = labels != ignore_index
    correct = (logits.argmax(dim=-1) == labels) & keep
    return correct.sum().float() / keep.sum().clamp(min=1).float()


def metric_name(task: Task) -> str | None:
    """The name of the task's metric: ``"accuracy"``, the callable's ``__name__``, or ``None``."""
    if task.metric is None:
        return None
    if isinstance(task.metric, str):
        return task.metric
    name = getattr(task.metric, "__name__", None) or type(task.metric).__name__
    return "metric" if name == "<lambda>" else str(name)


def batch_metric(task: Task, outputs: Any, targets: Any, *, mapping: bool = False) -> Tensor | None:
    """The task's metric on one batch as a 0-dim float32 tensor on the outputs' device.

    Stays on the device (no host sync) when the metric does, so evaluation can accumulate it.
    Returns ``None`` when the task has no metric. For a ``mapping`` batch, ``targets`` is its
    ``labels`` and ``"accuracy"`` is :func:`token_accuracy` of the output's ``logits``.
    """
    if task.metric is None:
        return None
    if mapping and targets is None:
        raise TaskError(f"task {task.name!r}: the metric {metric_name(task)!r} needs batch['labels']")
    if isinstance(task.metric, str):  # "accuracy", the only named metric
        if not mapping:
            return accuracy(outputs, targets)
        logits = outputs if isinstance(outputs, Tensor) else output_field(outputs, LOGITS_KEY)
        if not isinstance(logits, Tensor):
            raise TaskError(
                f"task {task.name!r}: accuracy on mapping batches needs the model's {LOGITS_KEY!r} "
                f"(attribute or key), got a {type(outputs).__name__} without it; use metric=None or a callable"
            )
        return token_accuracy(logits, targets)
    value = task.metric(outputs, targets)
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TaskError(
                f"task {task.name!r}: metric {metric_name(task)!r} must return a scalar, "
                f"got a tensor of shape {tuple(value.shape)}"
            )
        return value.detach().reshape(()).to(device=_device_of(outputs, targets), dtype=torch.float32)
    try:
        return torch.tensor(float(value), dtype=torch.float32, device=_device_of(outputs, targets))
    except (TypeError, ValueError):
        raise TaskError(
            f"task {task.name!r}: metric {metric_name(task)!r} must return a float or a "
            f"0-dim tensor, got {type(value).__name__}"
        ) from None


def _device_of(outputs: Any, targets: Any) -> torch.device:
    for value in (outputs, output_field(outputs, LOGITS_KEY), targets):
        if isinstance(value, Tensor):
            return value.device
    return torch.device("cpu")


def metric_value(task: Task, outputs: Tensor, targets: Tensor) -> float | None:
    """The task's metric on one batch as a Python float (``None`` when the task has none)."""
    value = batch_metric(task, outputs, targets)
    return None if value is None else float(value.item())


# --------------------------------------------------------------------------- losses


def gaussian_nll(outputs: Tensor, targets: Tensor) -> Tensor:
    """Gaussian negative log-likelihood with a predicted mean and log-variance.

    ``outputs[:, 0]`` is the mean and ``outputs[:, 1]`` the log-variance; the full NLL
    (with ``½·log 2π``) is returned, averaged over the batch. It goes negative once the
    predicted spread is small and right.

    Example:
        >>> round(gaussian_nll(torch.zeros(1, 2), torch.zeros(1, 1)).item(), 4)  # ½·log 2π
        0.9189
    """
    mean = outputs[:, :1]
    log_var = outputs[:, 1:2]
    targets = targets.reshape(mean.shape)
    return 0.5 * (log_var + (targets - mean).pow(2) * torch.exp(-log_var) + math.log(2 * math.pi)).mean()


# --------------------------------------------------------------------------- offline tasks


def digits_task(data_dir: Path = DEFAULT_DATA_DIR, download: bool = True) -> Task:
    """scikit-learn's bundled 8×8 digits (1,797 images, offline): train 1,437 / val 180 / test 180, MLP."""
    train, val, test = digits_splits()
    return Task(
        name="digits",
        model=functools.partial(mlp, 64, (128,), 10),
        train=train,
        val=val,
        batch_size=64,
        test=test,
    )


def friedman_task(data_dir: Path = DEFAULT_DATA_DIR, download: bool = True) -> Task:
    """Friedman #1 regression (4,000 samples, 10 features, noise 0.5), standardized target, MSE.

    Train 3,200 / val 400 / test 400.
    """
    train, val, test = friedman_splits()
    return Task(
        name="friedman",
        model=functools.partial(mlp, 10, (64, 64), 1),
        train=train,
        val=val,
        loss=F.mse_loss,
        metric=None,
        batch_size=64,
        test=test,
    )


def friedman_nll_task(data_dir: Path = DEFAULT_DATA_DIR, download: bool = True) -> Task:
    """Friedman #1 with a predicted mean and log-variance, trained by Gaussian NLL (goes negative)."""
    train, val, test = friedman_splits()
    return Task(
        name="friedman-nll",
        model=functools.partial(mlp, 10, (64, 64), 2),
        train=train,
        val=val,
        loss=gaussian_nll,
        metric=None,
        batch_size=64,
        test=test,
    )


def mnist1d_task(data_dir: Path = DEFAULT_DATA_DIR, download: bool = True) -> Task:
    """MNIST-1D (generated offline): train 3,600 / val 400 / test 1,000 sequences of length 40, MLP 40-100-100-10."""
    return _mnist1d("mnist1d", functools.partial(mlp, 40, (100, 100), 10))


def mnist1d_cnn_task(data_dir: Path = DEFAULT_DATA_DIR, download: bool = True) -> Task:
    """MNIST-1D with a small 1-D CNN (three stride-2 convolutions of 25 channels, ~5k parameters).

    Learning rate and schedule move its test accuracy by many points, so a study has something to find.
    """
    return _mnist1d("mnist1d-cnn", functools.partial(conv1d_net, 40, 10))


def _mnist1d(name: str, model: Callable[[], nn.Module]) -> Task:
    train, val, test = mnist1d_splits()
    return Task(name=name, model=model, train=train, val=val, batch_size=100, test=test)


def sort_transformer_task(data_dir: Path = DEFAULT_DATA_DIR, download: bool = True) -> Task:
    """Sort 12 random tokens (vocabulary 16) with a tiny post-LN Transformer; dict batches, model-side loss.

    8,000 generated training sequences (1,000 validation, 1,000 test kept aside by
    :func:`~lrtune.datasets.sort_splits`), offline. The model takes ``model(input_ids=..., labels=...)``
    and returns its loss and per-token logits; the metric is token accuracy. About three seconds per epoch
    on one CPU core.
    """
    train, val, test = sort_splits(length=SORT_LENGTH, vocab=SORT_VOCAB)
    return Task(
        name="sort-transformer",
        model=functools.partial(TinyTransformer, SORT_VOCAB, SORT_VOCAB, max_len=SORT_LENGTH, num_layers=4),
        train=train,
        val=val,
        loss=None,
        batch_size=64,
        test=test,
    )


# --------------------------------------------------------------------------- torchvision tasks
# val: a deterministic, stratified 10 % of the official training set (never augmented); test: the
# official test set.


def mnist_task(data_dir: Path = DEFAULT_DATA_DIR, download: bool = True) -> Task:
    """MNIST (torchvision, read from ``data_dir/MNIST/raw``), normalized, MLP 784-256-256-10."""
    train, val, test = mnist_splits(data_dir, download)
    return Task(
        name="mnist",
        model=functools.partial(mlp, 784, (256, 256), 10),
        train=train,
        val=val,
        batch_size=128,
        test=test,
    )


def fashion_mnist_task(data_dir: Path = DEFAULT_DATA_DIR, download: bool = True) -> Task:
    """Fashion-MNIST (torchvision, ``data_dir/FashionMNIST/raw``), normalized, small CNN."""
    train, val, test = fashion_mnist_splits(data_dir, download)
    return Task(
        name="fashion-mnist",
        model=functools.partial(small_cnn, 1, 10),
        train=train,
        val=val,
        batch_size=128,
        test=test,
    )


def cifar10_task(data_dir: Path = DEFAULT_DATA_DIR, download: bool = True) -> Task:
    """CIFAR-10 (torchvision, ``data_dir/cifar-10-batches-py``), crop+flip augmentation, ResNet-18."""
    train, val, test = cifar10_splits(data_dir, download)
    return Task(
        name="cifar10",
        model=functools.partial(cifar_resnet18, 10),
        train=train,
        val=val,
        batch_size=128,
        test=test,
    )


# --------------------------------------------------------------------------- image folders


def imagefolder_task(path: str | Path, *, size: int = 32, val_fraction: float = 0.1, seed: int = 0) -> Task:
    """A class-per-folder image collection (``PATH/cat/1.jpg``, ``PATH/dog/2.png``, ...).

    Images are resized to ``size``×``size`` RGB and normalized to [-1, 1]; a stratified,
    deterministic ``1 - val_fraction`` / ``val_fraction`` split; a small CNN.
    """
    root = Path(path).expanduser()
    train, val, classes = imagefolder_splits(root, size=size, val_fraction=val_fraction, seed=seed)
    return Task(
        name=f"imagefolder-{root.name or 'images'}",
        model=functools.partial(small_cnn, 3, len(classes)),
        train=train,
        val=val,
        batch_size=64,
    )


def digits_finetune_task(data_dir: Path = DEFAULT_DATA_DIR, download: bool = True) -> Task:
    """A body pretrained on digits 0–4, fine-tuned with a new head on 20 examples each of 5–9."""
    from lrtune.finetune import finetune_task

    return finetune_task()


# --------------------------------------------------------------------------- registry and loading

#: Built-in tasks by name; each factory takes ``(data_dir, download)``.
TASKS: dict[str, Callable[[Path, bool], Task]] = {
    "digits": digits_task,
    "friedman": friedman_task,
    "friedman-nll": friedman_nll_task,
    "mnist1d": mnist1d_task,
    "mnist1d-cnn": mnist1d_cnn_task,
    "sort-transformer": sort_transformer_task,
    "digits-finetune": digits_finetune_task,
    "mnist": mnist_task,
    "fashion-mnist": fashion_mnist_task,
    "cifar10": cifar10_task,
}

DEFAULT_TASK = "digits"
IMAGEFOLDER_PREFIX = "imagefolder:"


def load_task(spec: str, *, data_dir: Path | None = None, download: bool = True) -> Task:
    """Build the task ``spec`` names.

    Args:
        spec: a built-in name (see :data:`TASKS`), ``imagefolder:PATH``, or ``module:function``
            naming a function of no arguments that returns a :class:`Task` (the current folder
            is importable, as with ``python -m``).
        data_dir: where built-in datasets are read from and downloaded to (default ``./data``).
        download: whether missing built-in datasets may be downloaded.

    Raises:
        TaskError: the name is unknown or the user's function cannot be loaded or run.
        DataUnavailableError: the dataset's files are missing and cannot be fetched.

    Example:
        >>> load_task("friedman-nll").loss.__name__
        'gaussian_nll'
    """
    if not isinstance(spec, str) or not spec.strip():
        raise TaskError(f"the task must be a name or module:function, got {spec!r}")
    spec = spec.strip()
    if spec in TASKS:
        return TASKS[spec](Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR, download)
    if spec.startswith(IMAGEFOLDER_PREFIX):
        folder = spec[len(IMAGEFOLDER_PREFIX) :]
        if not folder:
            raise TaskError("imagefolder needs a path: --task imagefolder:PATH")
        return imagefolder_task(folder)
    if ":" in spec:
        return _load_user_task(spec)
    raise TaskError(
        f"unknown task {spec!r}; built-in tasks: {', '.join(TASKS)}; "
        "or imagefolder:PATH, or module:function for your own"
    )


def _load_user_task(spec: str) -> Task:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise TaskError(f"task {spec!r} must look like module:function, e.g. mypkg.tasks:make_task")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise TaskError(
                f"cannot import module {module_name!r} for task {spec!r}: not found in {cwd} "
                "or the installed packages; run lrtune from the folder that holds it"
            ) from None
        raise TaskError(
            f"importing module {module_name!r} failed: ModuleNotFoundError: {one_line(exc, limit=200, last=True)}"
        ) from exc
    except (Exception, SystemExit) as exc:
        raise TaskError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {one_line(exc, limit=200, last=True)}"
        ) from exc
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            callables = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            hint = f"; callables there: {', '.join(callables[:12])}" if callables else ""
            raise TaskError(f"module {module_name!r} has no attribute {attr!r}{hint}")
        target = getattr(target, part)
    if not callable(target):
        raise TaskError(f"{spec} is a {type(target).__name__}, not a function returning a lrtune.Task")
    try:
        task = target()
    except (Exception, SystemExit) as exc:
        raise TaskError(
            f"{spec}() raised {type(exc).__name__}: {one_line(exc, limit=200, last=True)}"
        ) from exc
    if not isinstance(task, Task):
        raise TaskError(f"{spec}() returned {type(task).__name__}, expected a lrtune.Task")
    return task
