"""Tasks: a model factory, train/val data, a loss and a metric, by name or from the user's code.

A :class:`Task` is what ``lrtune find`` and ``lrtune study`` train. The built-in ones live in
:data:`TASKS`; ``digits`` (scikit-learn's bundled 8×8 digits) is the default and runs offline in
seconds. Users point ``--task`` at their own ``module:function`` returning a :class:`Task`.

Example:
    >>> task = load_task("digits")
    >>> task.name, len(task.train), len(task.val), task.batch_size
    ('digits', 1437, 360, 64)
    >>> sum(p.numel() for p in task.model().parameters())
    9610
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset, TensorDataset

from lrtune.errors import DataUnavailableError, TaskError

logger = logging.getLogger(__name__)

#: Where built-in datasets are read from (and downloaded to) unless the caller says otherwise.
DEFAULT_DATA_DIR = Path("data")

METRIC_MODES = ("max", "min")

MetricFn = Callable[[Tensor, Tensor], "float | Tensor"]


@dataclass(frozen=True)
class Task:
    """Everything needed to train and evaluate one model.

    Args:
        name: short name used in logs and run names.
        model: builds a fresh, untrained model on every call.
        train: training dataset of ``(inputs, targets)`` pairs.
        val: validation dataset of ``(inputs, targets)`` pairs.
        loss: ``loss(outputs, targets) -> scalar Tensor`` (mean over the batch).
        metric: ``"accuracy"``, a callable ``metric(outputs, targets) -> float | 0-dim Tensor``
            (mean over the batch), or ``None`` (the study then optimizes the validation loss).
        batch_size: training batch size.
        metric_mode: ``"max"`` when a larger metric is better, ``"min"`` otherwise.
    """

    name: str
    model: Callable[[], nn.Module]
    train: Dataset[Any]
    val: Dataset[Any]
    loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy
    metric: str | MetricFn | None = "accuracy"
    batch_size: int = 128
    metric_mode: str = "max"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise TaskError(f"a task needs a non-empty name, got {self.name=!r}")
        if not callable(self.model):
            raise TaskError(
                f"task {self.name!r}: model must be a callable building a fresh nn.Module, "
                f"got {type(self.model).__name__}"
            )
        for split in ("train", "val"):
            dataset = getattr(self, split)
            try:
                size = len(dataset)
            except TypeError:
                raise TaskError(
                    f"task {self.name!r}: the {split} dataset must have a length "
                    f"(a map-style Dataset), got {type(dataset).__name__}"
                ) from None
            if size < 1:
                raise TaskError(f"task {self.name!r}: the {split} dataset is empty")
        if not callable(self.loss):
            raise TaskError(
                f"task {self.name!r}: loss must be callable(outputs, targets), got {type(self.loss).__name__}"
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


def metric_name(task: Task) -> str | None:
    """The name of the task's metric: ``"accuracy"``, the callable's ``__name__``, or ``None``."""
    if task.metric is None:
        return None
    if isinstance(task.metric, str):
        return task.metric
    name = getattr(task.metric, "__name__", None) or type(task.metric).__name__
    return "metric" if name == "<lambda>" else str(name)


def batch_metric(task: Task, outputs: Tensor, targets: Tensor) -> Tensor | None:
    """The task's metric on one batch as a 0-dim float32 tensor on the outputs' device.

    Stays on the device (no host sync) when the metric does, so evaluation can accumulate it.
    Returns ``None`` when the task has no metric.
    """
    if task.metric is None:
        return None
    if isinstance(task.metric, str):  # "accuracy", the only named metric
        return accuracy(outputs, targets)
    value = task.metric(outputs, targets)
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TaskError(
                f"task {task.name!r}: metric {metric_name(task)!r} must return a scalar, "
                f"got a tensor of shape {tuple(value.shape)}"
            )
        return value.detach().reshape(()).to(device=outputs.device, dtype=torch.float32)
    try:
        return torch.tensor(float(value), dtype=torch.float32, device=outputs.device)
    except (TypeError, ValueError):
        raise TaskError(
            f"task {task.name!r}: metric {metric_name(task)!r} must return a float or a "
            f"0-dim tensor, got {type(value).__name__}"
        ) from None


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


# --------------------------------------------------------------------------- models


def mlp(in_features: int, hidden: Sequence[int], out_features: int) -> nn.Sequential:
    """A ReLU multi-layer perceptron that flattens its input first."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def small_cnn(in_channels: int, num_classes: int, width: int = 32) -> nn.Sequential:
    """Three conv-BN-ReLU blocks (two of them pooled) and global average pooling; any input size."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(in_channels, width),
        nn.MaxPool2d(2),
        *block(width, 2 * width),
        nn.MaxPool2d(2),
        *block(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 adapted to 32×32 inputs: 3×3 stride-1 first conv, no max-pool."""
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


# --------------------------------------------------------------------------- offline tasks


def digits_task(data_dir: Path = DEFAULT_DATA_DIR, download: bool = True) -> Task:
    """scikit-learn's bundled 8×8 digits (1,797 images, offline): 80/20 stratified split, MLP."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return Task(
        name="digits",
        model=functools.partial(mlp, 64, (128,), 10),
        train=TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train)),
        val=TensorDataset(torch.from_numpy(x_val), torch.from_numpy(y_val)),
        batch_size=64,
    )


def _friedman_splits() -> tuple[TensorDataset, TensorDataset]:
    from sklearn.datasets import make_friedman1
    from sklearn.model_selection import train_test_split

    x, y = make_friedman1(n_samples=4000, n_features=10, noise=0.5, random_state=0)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.2, random_state=0)
    x_mean, x_std = x_train.mean(axis=0), x_train.std(axis=0)
    y_mean, y_std = y_train.mean(), y_train.std()

    def tensors(xs: np.ndarray, ys: np.ndarray) -> TensorDataset:
        inputs = torch.from_numpy(((xs - x_mean) / x_std).astype(np.float32))
        targets = torch.from_numpy(((ys - y_mean) / y_std).astype(np.float32)).unsqueeze(1)
        return TensorDataset(inputs, targets)

    return tensors(x_train, y_train), tensors(x_val, y_val)


def friedman_task(data_dir: Path = DEFAULT_DATA_DIR, download: bool = True) -> Task:
    """Friedman #1 regression (4,000 samples, 10 features, noise 0.5), standardized target, MSE."""
    train, val = _friedman_splits()
    return Task(
        name="friedman",
        model=functools.partial(mlp, 10, (64, 64), 1),
        train=train,
        val=val,
        loss=F.mse_loss,
        metric=None,
        batch_size=64,
    )


def friedman_nll_task(data_dir: Path = DEFAULT_DATA_DIR, download: bool = True) -> Task:
    """Friedman #1 with a predicted mean and log-variance, trained by Gaussian NLL (goes negative)."""
    train, val = _friedman_splits()
    return Task(
        name="friedman-nll",
        model=functools.partial(mlp, 10, (64, 64), 2),
        train=train,
        val=val,
        loss=gaussian_nll,
        metric=None,
        batch_size=64,
    )


# --------------------------------------------------------------------------- torchvision tasks


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """The last non-empty line of an exception's message, shortened: what the user needs to see."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _torchvision_splits(
    label: str,
    task_name: str,
    factory: Callable[..., Dataset[Any]],
    *,
    data_dir: Path,
    download: bool,
    folder: str,
    files: Sequence[str],
    train_transform: Any,
    val_transform: Any,
) -> tuple[Dataset[Any], Dataset[Any]]:
    """Build the train and test splits of a torchvision dataset, or explain why they are missing."""
    root = Path(data_dir)
    created = [p for p in (root, root / folder, root / folder / "raw") if not p.exists()]
    try:
        # torchvision reports download progress on stdout/stderr; the CLI owns the terminal.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            train = factory(root=str(root), train=True, download=download, transform=train_transform)
            val = factory(root=str(root), train=False, download=download, transform=val_transform)
    except Exception as exc:
        for path in reversed(created):  # leave no empty folders behind from a failed download
            with contextlib.suppress(OSError):
                path.rmdir()
        reason = f"could not be downloaded ({_one_line(exc)})" if download else "downloads are off"
        raise DataUnavailableError(
            f"{label} is not in {root / folder} (expected {', '.join(files)}) and {reason}; "
            f"get it on a machine with internet (`lrtune find --task {task_name} --data-dir DIR` "
            "downloads it into DIR), copy DIR here and pass --data-dir DIR"
        ) from None
    return train, val


_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def mnist_task(data_dir: Path = DEFAULT_DATA_DIR, download: bool = True) -> Task:
    """MNIST (torchvision, read from ``data_dir/MNIST/raw``), normalized, MLP 784-256-256-10."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train, val = _torchvision_splits(
        "MNIST",
        "mnist",
        datasets.MNIST,
        data_dir=data_dir,
        download=download,
        folder="MNIST",
        files=[f"raw/{name}" for name in _MNIST_FILES],
        train_transform=transform,
        val_transform=transform,
    )
    return Task(
        name="mnist", model=functools.partial(mlp, 784, (256, 256), 10), train=train, val=val, batch_size=128
    )


def fashion_mnist_task(data_dir: Path = DEFAULT_DATA_DIR, download: bool = True) -> Task:
    """Fashion-MNIST (torchvision, ``data_dir/FashionMNIST/raw``), normalized, small CNN."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))])
    train, val = _torchvision_splits(
        "Fashion-MNIST",
        "fashion-mnist",
        datasets.FashionMNIST,
        data_dir=data_dir,
        download=download,
        folder="FashionMNIST",
        files=[f"raw/{name}" for name in _MNIST_FILES],
        train_transform=transform,
        val_transform=transform,
    )
    return Task(
        name="fashion-mnist", model=functools.partial(small_cnn, 1, 10), train=train, val=val, batch_size=128
    )


CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def cifar10_task(data_dir: Path = DEFAULT_DATA_DIR, download: bool = True) -> Task:
    """CIFAR-10 (torchvision, ``data_dir/cifar-10-batches-py``), crop+flip augmentation, ResNet-18."""
    from torchvision import datasets, transforms

    normalize = transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)
    train_transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ]
    )
    val_transform = transforms.Compose([transforms.ToTensor(), normalize])
    train, val = _torchvision_splits(
        "CIFAR10",
        "cifar10",
        datasets.CIFAR10,
        data_dir=data_dir,
        download=download,
        folder="cifar-10-batches-py",
        files=["data_batch_1 to data_batch_5", "test_batch", "batches.meta"],
        train_transform=train_transform,
        val_transform=val_transform,
    )
    return Task(
        name="cifar10", model=functools.partial(cifar_resnet18, 10), train=train, val=val, batch_size=128
    )


# --------------------------------------------------------------------------- image folders


class ImageFiles(Dataset[tuple[Any, int]]):
    """Labelled image files decoded on access (module level, so DataLoader workers can pickle it).

    Args:
        samples: ``(path, class index)`` pairs.
        classes: class names, by index.
        transform: applied to each decoded RGB PIL image.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Sequence[str], transform: Any) -> None:
        self.samples = list(samples)
        self.classes = list(classes)
        self.targets = [label for _, label in self.samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from torchvision.datasets.folder import default_loader

        path, label = self.samples[index]
        image = default_loader(path)
        return (self.transform(image) if self.transform is not None else image), label


def imagefolder_task(path: str | Path, *, size: int = 32, val_fraction: float = 0.1, seed: int = 0) -> Task:
    """A class-per-folder image collection (``PATH/cat/1.jpg``, ``PATH/dog/2.png``, ...).

    Images are resized to ``size``×``size`` RGB and normalized to [-1, 1]; a stratified,
    deterministic ``1 - val_fraction`` / ``val_fraction`` split; a small CNN.
    """
    from torchvision import transforms
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataUnavailableError(
            f"image folder {root} does not exist; expected one sub-folder per class "
            f"with the images inside, e.g. {root}/cats/001.jpg"
        )
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if len(classes) < 2:
        raise TaskError(
            f"image folder {root} has {len(classes)} class sub-folder(s) "
            f"({', '.join(classes) or 'none'}); at least 2 are needed, one per class"
        )
    transform = transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize((0.5,) * 3, (0.5,) * 3),
        ]
    )
    try:
        samples = make_dataset(str(root), {c: i for i, c in enumerate(classes)}, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, ValueError) as exc:
        raise TaskError(f"image folder {root}: {_one_line(exc)}") from None
    dataset = ImageFiles(samples, classes, transform)
    targets = np.asarray(dataset.targets)
    rng = np.random.default_rng(seed)
    train_idx: list[int] = []
    val_idx: list[int] = []
    for label in range(len(dataset.classes)):
        members = rng.permutation(np.flatnonzero(targets == label))
        n_val = max(1, round(val_fraction * len(members))) if len(members) >= 2 else 0
        val_idx += members[:n_val].tolist()
        train_idx += members[n_val:].tolist()
    if not val_idx:
        raise TaskError(
            f"image folder {root} has too few images to hold some out for validation "
            f"({len(dataset)} in {len(dataset.classes)} classes); put at least 2 in a class"
        )
    return Task(
        name=f"imagefolder-{root.name or 'images'}",
        model=functools.partial(small_cnn, 3, len(dataset.classes)),
        train=Subset(dataset, sorted(train_idx)),
        val=Subset(dataset, sorted(val_idx)),
        batch_size=64,
    )


# --------------------------------------------------------------------------- registry and loading

#: Built-in tasks by name; each factory takes ``(data_dir, download)``.
TASKS: dict[str, Callable[[Path, bool], Task]] = {
    "digits": digits_task,
    "friedman": friedman_task,
    "friedman-nll": friedman_nll_task,
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
            f"importing module {module_name!r} failed: ModuleNotFoundError: {_one_line(exc)}"
        ) from exc
    except (Exception, SystemExit) as exc:
        raise TaskError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {_one_line(exc)}"
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
        raise TaskError(f"{spec}() raised {type(exc).__name__}: {_one_line(exc)}") from exc
    if not isinstance(task, Task):
        raise TaskError(f"{spec}() returned {type(task).__name__}, expected a lrtune.Task")
    return task
