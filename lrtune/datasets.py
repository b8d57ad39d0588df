"""The data behind the built-in tasks, as ``(train, val, test)`` datasets; models and losses are not here.

scikit-learn's bundled digits, the generated Friedman #1 regression, MNIST-1D and the token sequences to
sort (:func:`sort_splits`, mapping items) need no files. MNIST, Fashion-MNIST
and CIFAR-10 are read by torchvision from a data folder (downloaded there when allowed), with one clear
:class:`~lrtune.errors.DataUnavailableError` when they are missing. Any class-per-folder image collection
becomes a stratified, deterministic split of :class:`ImageFiles`. Every split is deterministic; ``test``
is held out from everything a study selects on.

Example:
    >>> train, val, test = digits_splits()
    >>> len(train), len(val), len(test), tuple(train[0][0].shape)
    (1437, 180, 180, (64,))
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from lrtune.data import TensorDictDataset
from lrtune.errors import DataUnavailableError, TaskError, one_line

# --------------------------------------------------------------------------- splitting


def stratified_split(labels: Any, held_out: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(kept, held)``: exactly ``held_out`` samples held out, each class in proportion.

    Class ``c`` of ``n_c`` samples gives ``held_out · n_c / n`` rounded by largest remainder (ties to
    the smaller class label), drawn from a permutation seeded by ``seed``; both index arrays are sorted.
    Works for any size, also when there are more classes than held-out samples.

    Example:
        >>> kept, held = stratified_split([0, 0, 0, 0, 1, 1, 1, 1], 4)
        >>> len(kept), len(held), sorted(int(i) // 4 for i in held)
        (4, 4, [0, 0, 1, 1])
    """
    labels = np.asarray(labels).reshape(-1)
    total = len(labels)
    if not 0 <= held_out <= total:
        raise ValueError(f"cannot hold out {held_out} of {total} samples, got {held_out=}")
    classes, counts = np.unique(labels, return_counts=True)
    quotas = held_out * counts / total if total else counts * 0.0
    take = np.floor(quotas).astype(np.int64)
    order = np.argsort(-(quotas - take), kind="stable")
    take[order[: held_out - int(take.sum())]] += 1
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for label, count in zip(classes, take, strict=True):
        members = rng.permutation(np.flatnonzero(labels == label))
        held.append(members[:count])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    kept_mask = np.ones(total, dtype=bool)
    kept_mask[held_idx] = False
    return np.flatnonzero(kept_mask), held_idx


# --------------------------------------------------------------------------- bundled and generated data


def digits_splits() -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """scikit-learn's bundled 8×8 digits (1,797 images) scaled to [0, 1], stratified and deterministic.

    Train 1,437 (80 %); the 360 held-out images are split in half, stratified: val 180, test 180.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_out, y_train, y_out = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    val_idx, test_idx = stratified_split(y_out, len(y_out) // 2)

    def tensors(xs: np.ndarray, ys: np.ndarray) -> TensorDataset:
        return TensorDataset(
            torch.from_numpy(np.ascontiguousarray(xs)), torch.from_numpy(np.ascontiguousarray(ys))
        )

    return (
        tensors(x_train, y_train),
        tensors(x_out[val_idx], y_out[val_idx]),
        tensors(x_out[test_idx], y_out[test_idx]),
    )


def friedman_splits() -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """Friedman #1 regression (4,000 samples, 10 features, noise 0.5), standardized by the train part.

    Train 3,200 (80 %); the 800 held-out samples are split in half: val 400, test 400.
    """
    from sklearn.datasets import make_friedman1
    from sklearn.model_selection import train_test_split

    x, y = make_friedman1(n_samples=4000, n_features=10, noise=0.5, random_state=0)
    x_train, x_out, y_train, y_out = train_test_split(x, y, test_size=0.2, random_state=0)
    x_val, x_test, y_val, y_test = train_test_split(x_out, y_out, test_size=0.5, random_state=0)
    x_mean, x_std = x_train.mean(axis=0), x_train.std(axis=0)
    y_mean, y_std = y_train.mean(), y_train.std()

    def tensors(xs: np.ndarray, ys: np.ndarray) -> TensorDataset:
        inputs = torch.from_numpy(((xs - x_mean) / x_std).astype(np.float32))
        targets = torch.from_numpy(((ys - y_mean) / y_std).astype(np.float32)).unsqueeze(1)
        return TensorDataset(inputs, targets)

    return tensors(x_train, y_train), tensors(x_val, y_val), tensors(x_test, y_test)


#: MNIST-1D: 4,000 training sequences (of which :data:`MNIST1D_VAL` are held out for validation).
MNIST1D_VAL = 400


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The MNIST-1D arrays (``x``, ``y``, ``x_test``, ``y_test``), generated once per process."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataUnavailableError(
            "the mnist1d task needs the mnist1d package: pip install mnist1d==0.0.2.post1"
        ) from None
    py_state, np_state = random.getstate(), np.random.get_state()
    try:  # make_dataset seeds Python's and NumPy's global generators; leave them as they were
        data = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    arrays = (
        np.asarray(data["x"], dtype=np.float32),
        np.asarray(data["y"], dtype=np.int64),
        np.asarray(data["x_test"], dtype=np.float32),
        np.asarray(data["y_test"], dtype=np.int64),
    )
    for array in arrays:
        array.setflags(write=False)
    return arrays


def mnist1d_splits() -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """MNIST-1D (Greydanus, 2020): 1-D sequences of length 40, 10 classes, generated offline in seconds.

    The package's default arguments (seed 42) give 4,000 training and 1,000 test sequences; train
    3,600 / val 400 are a stratified, deterministic split of the 4,000, and test is the package's 1,000.
    The data is generated once per process; every call returns fresh tensors.
    """
    x, y, x_test, y_test = _mnist1d_arrays()
    train_idx, val_idx = stratified_split(y, MNIST1D_VAL)

    def tensors(xs: np.ndarray, ys: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.tensor(xs), torch.tensor(ys))

    return tensors(x[train_idx], y[train_idx]), tensors(x[val_idx], y[val_idx]), tensors(x_test, y_test)


def sort_splits(
    *,
    n_train: int = 8000,
    n_val: int = 1000,
    n_test: int = 1000,
    length: int = 12,
    vocab: int = 16,
    seed: int = 0,
) -> tuple[TensorDictDataset, TensorDictDataset, TensorDictDataset]:
    """Sequences of random tokens to sort: ``{"input_ids": x, "labels": sorted(x)}``, generated offline.

    Each sequence has ``length`` tokens drawn uniformly from ``0..vocab-1`` (repeats allowed); its
    labels are the same tokens in ascending order. Train, validation and test splits come from one
    seeded generator, so they are the same on every machine.

    Example:
        >>> train, val, test = sort_splits(n_train=4, n_val=2, n_test=2, length=5)
        >>> item = train[0]
        >>> item["labels"].tolist() == sorted(item["input_ids"].tolist()), len(val), len(test)
        (True, 2, 2)
    """
    for name, value in {"n_train": n_train, "n_val": n_val, "n_test": n_test, "length": length}.items():
        if value < 1:
            raise TaskError(f"sort_splits needs {name} >= 1, got {name}={value!r}")
    if vocab < 2:
        raise TaskError(f"sort_splits needs vocab >= 2, got {vocab=!r}")
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (n_train + n_val + n_test, length), generator=generator)
    labels = tokens.sort(dim=1).values
    bounds = [(0, n_train), (n_train, n_train + n_val), (n_train + n_val, n_train + n_val + n_test)]
    train, val, test = (
        TensorDictDataset({"input_ids": tokens[a:b], "labels": labels[a:b]}) for a, b in bounds
    )
    return train, val, test


# --------------------------------------------------------------------------- torchvision data sets


#: Share of the official training set of a torchvision data set held out for validation.
VAL_FRACTION = 0.1


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
) -> tuple[Dataset[Any], Dataset[Any], Dataset[Any]]:
    """The train, val and test splits of a torchvision dataset, or one error saying why it is missing.

    ``val`` is a deterministic, stratified :data:`VAL_FRACTION` of the official training set, read with
    ``val_transform`` (no augmentation); ``train`` is the rest; ``test`` is the official test set.
    """
    root = Path(data_dir)
    created = [p for p in (root, root / folder, root / folder / "raw") if not p.exists()]
    try:
        # torchvision reports download progress on stdout/stderr; the CLI owns the terminal.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            official_train = factory(root=str(root), train=True, download=download, transform=train_transform)
            test = factory(root=str(root), train=False, download=download, transform=val_transform)
    except Exception as exc:
        for path in reversed(created):  # leave no empty folders behind from a failed download
            with contextlib.suppress(OSError):
                path.rmdir()
        reason = (
            f"could not be downloaded ({one_line(exc, limit=200, last=True)})"
            if download
            else "downloads are off"
        )
        raise DataUnavailableError(
            f"{label} is not in {root / folder} (expected {', '.join(files)}) and {reason}; "
            f"get it on a machine with internet (`lrtune find --task {task_name} --data-dir DIR` "
            "downloads it into DIR), copy DIR here and pass --data-dir DIR"
        ) from None
    plain_train = official_train
    if val_transform is not train_transform:  # the same images, without augmentation
        from torchvision.datasets.vision import StandardTransform

        plain_train = copy.copy(official_train)
        plain_train.transform = val_transform  # type: ignore[attr-defined]
        plain_train.transforms = StandardTransform(val_transform, None)  # type: ignore[attr-defined]
    labels = np.asarray(official_train.targets)  # type: ignore[attr-defined]
    train_idx, val_idx = stratified_split(labels, round(VAL_FRACTION * len(labels)))
    return Subset(official_train, train_idx.tolist()), Subset(plain_train, val_idx.tolist()), test


_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def mnist_splits(data_dir: Path, download: bool) -> tuple[Dataset[Any], Dataset[Any], Dataset[Any]]:
    """MNIST (torchvision, read from ``data_dir/MNIST/raw``), normalized."""
    from torchvision import datasets

    return _mnist_like("MNIST", "mnist", datasets.MNIST, "MNIST", (0.1307, 0.3081), data_dir, download)


def fashion_mnist_splits(data_dir: Path, download: bool) -> tuple[Dataset[Any], Dataset[Any], Dataset[Any]]:
    """Fashion-MNIST (torchvision, ``data_dir/FashionMNIST/raw``), normalized."""
    from torchvision import datasets

    return _mnist_like(
        "Fashion-MNIST",
        "fashion-mnist",
        datasets.FashionMNIST,
        "FashionMNIST",
        (0.2860, 0.3530),
        data_dir,
        download,
    )


def _mnist_like(
    title: str,
    key: str,
    dataset_class: Any,
    folder: str,
    mean_std: tuple[float, float],
    data_dir: Path,
    download: bool,
) -> tuple[Dataset[Any], Dataset[Any], Dataset[Any]]:
    from torchvision import transforms

    mean, std = mean_std
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    return _torchvision_splits(
        title,
        key,
        dataset_class,
        data_dir=data_dir,
        download=download,
        folder=folder,
        files=[f"raw/{name}" for name in _MNIST_FILES],
        train_transform=transform,
        val_transform=transform,
    )


CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def cifar10_splits(data_dir: Path, download: bool) -> tuple[Dataset[Any], Dataset[Any], Dataset[Any]]:
    """CIFAR-10 (torchvision, ``data_dir/cifar-10-batches-py``), crop+flip augmentation when training."""
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
    return _torchvision_splits(
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


def imagefolder_splits(
    path: str | Path, *, size: int, val_fraction: float, seed: int
) -> tuple[Dataset[Any], Dataset[Any], list[str]]:
    """The train and validation subsets of a class-per-folder image collection, and the class names.

    Images are resized to ``size``×``size`` RGB and normalized to [-1, 1]; each class keeps
    ``val_fraction`` of its images (at least one, none from a class of one) for validation, chosen
    deterministically by ``seed``.
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
        raise TaskError(f"image folder {root}: {one_line(exc, limit=200, last=True)}") from None
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
    return Subset(dataset, sorted(train_idx)), Subset(dataset, sorted(val_idx)), dataset.classes
