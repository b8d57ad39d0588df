"""Batching: small datasets live on the device as tensors; large ones stream through a DataLoader.

:func:`make_loader` is the one entry point. When a dataset fits (by default up to 512 MiB) and has
no random augmentation, it is turned into two tensors once and served by :class:`DeviceBatches`,
which slices batches by index on the device: no collation, no host-to-device copy per batch.
Datasets of mappings (``{"input_ids": ..., "labels": ...}``) get one tensor per key and
:class:`DeviceDictBatches`, which yields ``dict`` batches for ``model(**batch)``.
Otherwise a :class:`torch.utils.data.DataLoader` (worker processes, pinned memory on CUDA) is
wrapped in :class:`DeviceLoader` so batches arrive on the device too. Both shuffle with their own
:class:`torch.Generator` (never the global RNG) and have ``reseed(seed)`` and ``len()``.

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> data = TensorDataset(torch.arange(10.0).unsqueeze(1), torch.arange(10))
    >>> loader = make_loader(data, batch_size=4, shuffle=False, device="cpu")
    >>> type(loader).__name__, len(loader), [len(y) for _, y in loader]
    ('DeviceBatches', 3, [4, 4, 2])
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, TensorDataset

from lrtune.errors import DeviceError, UsageError

logger = logging.getLogger(__name__)

#: Datasets up to this size (inputs plus targets) are kept on the device as tensors.
DEFAULT_MAX_DEVICE_BYTES = 512 * 2**20

#: Device names users may pass (``cuda:N`` is accepted too).
DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class Batches(Protocol):
    """What :func:`make_loader` returns: re-iterable ``(inputs, targets)`` or mapping batches on the device."""

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...

    def reseed(self, seed: int) -> None: ...


# --------------------------------------------------------------------------- devices


def check_device_name(name: str) -> str:
    """Check the spelling of a device name without touching the hardware; return it.

    Raises:
        UsageError: not one of ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
    """
    if not isinstance(name, str) or not _DEVICE_PATTERN.match(name):
        raise UsageError(f"unknown device {name!r}; choose one of: {', '.join(DEVICE_NAMES)} (or cuda:N)")
    return name


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a user's ``--device`` choice.

    ``auto`` picks CUDA when available, then Apple's MPS, then the CPU.

    Raises:
        DeviceError: a device was asked for by name but is not available here.
        UsageError: the name is not a device lrtune knows.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    check_device_name(name)
    mps_available = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_available else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {name} was requested but no CUDA GPU is available; use --device cpu or --device auto"
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"--device {name} was requested but only {torch.cuda.device_count()} CUDA GPU(s) exist; "
                f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
        return device
    if name == "mps" and not mps_available:
        raise DeviceError(
            "--device mps was requested but Apple's MPS backend is not available; use --device cpu or auto"
        )
    return torch.device(name)


# --------------------------------------------------------------------------- device-resident batches


class _IndexedBatches:
    """Batches taken by index from tensors on the device; subclasses say how one batch is taken."""

    def __init__(
        self,
        first: Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        device: torch.device | str | None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch_size must be an integer >= 1, got {batch_size=!r}")
        self.device = torch.device(device) if device is not None else first.device
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self._num_samples = int(first.shape[0])
        self._generator = torch.Generator()
        self.reseed(seed)

    @property
    def num_samples(self) -> int:
        """Samples per pass (before ``drop_last``)."""
        return self._num_samples

    def reseed(self, seed: int) -> None:
        """Restart the shuffling sequence from ``seed``."""
        self._generator.manual_seed(int(seed))

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _indices(self) -> Iterator[slice | Tensor]:
        """One pass: a slice per batch in order, or an index tensor per batch when shuffling."""
        n, size = self.num_samples, self.batch_size
        stop = len(self) * size
        if not self.shuffle:
            for start in range(0, stop, size):
                yield slice(start, start + size)
            return
        order = torch.randperm(n, generator=self._generator).to(self.device)
        for start in range(0, stop, size):
            yield order[start : start + size]


def _take(tensor: Tensor, index: slice | Tensor) -> Tensor:
    return tensor[index] if isinstance(index, slice) else tensor.index_select(0, index)


class DeviceBatches(_IndexedBatches):
    """Batches sliced by index from two tensors that live on the device.

    Each pass over it reshuffles (when ``shuffle``) from its own CPU :class:`torch.Generator`,
    so the global RNG is never touched and the order depends only on ``seed``.

    Args:
        inputs: all inputs, first dimension = samples.
        targets: all targets, same first dimension.
        batch_size: samples per batch.
        shuffle: reshuffle at the start of every pass.
        seed: seed of the shuffling generator.
        drop_last: drop the last, smaller batch.
        device: where the tensors (and batches) live; default: where ``inputs`` already is.

    Example:
        >>> batches = DeviceBatches(torch.arange(6.0), torch.arange(6), batch_size=4, shuffle=True)
        >>> sorted(torch.cat([y for _, y in batches]).tolist())
        [0, 1, 2, 3, 4, 5]
    """

    def __init__(
        self,
        inputs: Tensor,
        targets: Tensor,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        if inputs.ndim == 0 or targets.ndim == 0 or inputs.shape[0] != targets.shape[0]:
            raise UsageError(
                f"inputs and targets must have the same number of samples, got shapes "
                f"{tuple(inputs.shape)} and {tuple(targets.shape)}"
            )
        super().__init__(inputs, batch_size, shuffle, seed, drop_last, device)
        self.inputs = inputs.to(self.device)
        self.targets = targets.to(self.device)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for index in self._indices():
            yield _take(self.inputs, index), _take(self.targets, index)


def _check_fields(tensors: Mapping[str, Tensor]) -> Tensor:
    """The first tensor of a mapping of per-key tensors, after checking they all have the same samples."""
    sizes = {key: tuple(t.shape) for key, t in tensors.items()}
    if not tensors or len({shape[:1] for shape in sizes.values()}) != 1 or () in sizes.values():
        raise UsageError(f"every field of a mapping dataset needs the same number of samples, got {sizes}")
    return next(iter(tensors.values()))


class DeviceDictBatches(_IndexedBatches):
    """Mapping batches (``{"input_ids": ..., "labels": ...}``) sliced by index from tensors on the device.

    The same shuffling, ``reseed`` and ``drop_last`` as :class:`DeviceBatches`; every batch is a new
    ``dict`` with the same keys, ready for ``model(**batch)``.

    Example:
        >>> batches = DeviceDictBatches({"x": torch.zeros(5, 2), "labels": torch.arange(5)},
        ...                             batch_size=2, shuffle=False)
        >>> [b["labels"].tolist() for b in batches]
        [[0, 1], [2, 3], [4]]
    """

    def __init__(
        self,
        tensors: Mapping[str, Tensor],
        *,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(_check_fields(tensors), batch_size, shuffle, seed, drop_last, device)
        self.tensors = {key: t.to(self.device) for key, t in tensors.items()}

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for index in self._indices():
            yield {key: _take(t, index) for key, t in self.tensors.items()}


class TensorDictDataset(Dataset[dict[str, Tensor]]):
    """A dataset of mapping items held as one tensor per key (the mapping twin of ``TensorDataset``).

    Example:
        >>> data = TensorDictDataset({"input_ids": torch.zeros(3, 4, dtype=torch.long), "labels": torch.ones(3)})
        >>> len(data), sorted(data[0])
        (3, ['input_ids', 'labels'])
    """

    def __init__(self, tensors: Mapping[str, Tensor]) -> None:
        _check_fields(tensors)
        self.tensors = dict(tensors)

    def __len__(self) -> int:
        return int(next(iter(self.tensors.values())).shape[0])

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {key: t[index] for key, t in self.tensors.items()}


# --------------------------------------------------------------------------- DataLoader on the device


class DeviceLoader:
    """A :class:`DataLoader` whose ``(inputs, targets)`` (or mapping) batches are moved to ``device``.

    Args:
        loader: the DataLoader (built by :func:`make_loader`).
        generator: the generator the loader shuffles with (``reseed`` re-seeds it).
        device: where batches go; copies are non-blocking when the loader pins memory.
    """

    def __init__(self, loader: DataLoader[Any], generator: torch.Generator, device: torch.device) -> None:
        self.loader = loader
        self.device = device
        self._generator = generator
        self._non_blocking = bool(loader.pin_memory) and device.type == "cuda"

    def reseed(self, seed: int) -> None:
        """Restart the shuffling sequence from ``seed``."""
        self._generator.manual_seed(int(seed))

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            if isinstance(batch, Mapping):
                yield {
                    key: value.to(self.device, non_blocking=self._non_blocking)
                    if isinstance(value, Tensor)
                    else value
                    for key, value in batch.items()
                }
                continue
            if not isinstance(batch, (list, tuple)) or len(batch) != 2:
                raise UsageError(
                    f"dataset items must be (inputs, targets) pairs or mappings, got a batch of "
                    f"{type(batch).__name__}"
                )
            inputs, targets = batch
            yield (
                inputs.to(self.device, non_blocking=self._non_blocking),
                targets.to(self.device, non_blocking=self._non_blocking),
            )


# --------------------------------------------------------------------------- turning datasets into tensors

# torchvision transforms that give the same output every time (v1 and v2 names).
_DETERMINISTIC_TRANSFORMS = frozenset(
    {"Compose", "ToTensor", "PILToTensor", "Normalize", "Resize", "CenterCrop", "Grayscale", "Pad",
     "ConvertImageDtype", "ToImage", "ToDtype", "ToPureTensor", "Identity"}
)  # fmt: skip


def _transforms_of(dataset: Any) -> Iterator[Any]:
    """Every transform attached to a dataset or the datasets it wraps."""
    for attr in ("transform", "target_transform"):
        value = getattr(dataset, attr, None)
        if value is not None:
            yield value
    if isinstance(dataset, Subset):
        yield from _transforms_of(dataset.dataset)
    elif isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            yield from _transforms_of(part)


def _is_random_transform(transform: Any) -> bool:
    """True for torchvision transforms that augment at random (``Random*``, ``ColorJitter``, ...).

    Callables lrtune does not know are judged by drawing the same sample twice instead.
    """
    cls = type(transform)
    if not cls.__module__.startswith("torchvision.transforms"):
        return False
    if cls.__name__ == "Compose":
        return any(_is_random_transform(t) for t in transform.transforms)
    return cls.__name__ not in _DETERMINISTIC_TRANSFORMS


def _vision_tensors(dataset: Any) -> tuple[Tensor, Tensor] | None:
    """Fast path for torchvision MNIST-family and CIFAR datasets with ToTensor (+ Normalize)."""
    if "torchvision" not in sys.modules or getattr(dataset, "target_transform", None) is not None:
        return None
    from torchvision import datasets, transforms

    if not isinstance(dataset, (datasets.MNIST, datasets.CIFAR10)) or isinstance(dataset, datasets.QMNIST):
        return None
    steps = getattr(dataset, "transform", None)
    steps = list(steps.transforms) if isinstance(steps, transforms.Compose) else [steps]
    if not steps or type(steps[0]) is not transforms.ToTensor:
        return None
    if len(steps) > 2 or (len(steps) == 2 and type(steps[1]) is not transforms.Normalize):
        return None
    data = torch.as_tensor(dataset.data)
    targets = torch.as_tensor(dataset.targets, dtype=torch.int64)
    if targets.ndim != 1:
        return None
    # The same arithmetic as ToTensor (uint8 HxW[xC] -> float CxHxW / 255) and Normalize.
    inputs = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
    inputs = inputs.float().div(255)
    if len(steps) == 2:
        norm = steps[1]
        mean = torch.as_tensor(norm.mean, dtype=inputs.dtype).reshape(-1, 1, 1)
        std = torch.as_tensor(norm.std, dtype=inputs.dtype).reshape(-1, 1, 1)
        inputs = inputs.sub(mean).div(std)
    return inputs.contiguous(), targets


def _fast_tensors(dataset: Any) -> tuple[Tensor, Tensor] | None:
    """Tensors of datasets that already hold them: TensorDataset, torchvision MNIST/CIFAR, Subsets."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        inputs, targets = dataset.tensors
        return inputs, targets
    if isinstance(dataset, Subset):
        base = _fast_tensors(dataset.dataset)
        if base is None:
            return None
        index = torch.as_tensor(list(dataset.indices), dtype=torch.int64)
        return base[0][index], base[1][index]
    return _vision_tensors(dataset)


def _as_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return None


@contextlib.contextmanager
def _rng_preserved() -> Iterator[None]:
    """Restore torch's, numpy's and Python's global RNG states on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _stack_items(dataset: Dataset[Any], max_bytes: int) -> tuple[Tensor, Tensor] | None:
    """Read every item once and stack them, when they are tensors, deterministic and small enough."""
    n = len(dataset)  # type: ignore[arg-type]
    first = dataset[0]
    if not isinstance(first, (list, tuple)) or len(first) != 2:
        return None
    x0 = _as_tensor(first[0])
    if x0 is None:
        return None
    y0 = _as_tensor(first[1])
    if y0 is None and not isinstance(first[1], (int, float, np.integer, np.floating)):
        return None
    estimate = n * (x0.nbytes + (y0.nbytes if y0 is not None else 8))
    if estimate > max_bytes:
        logger.debug("dataset of %d items (~%d MiB) is too large to keep on the device", n, estimate >> 20)
        return None
    again = _as_tensor(dataset[0][0])
    if again is None or again.shape != x0.shape or not torch.equal(again, x0):
        logger.debug("dataset items change between reads (random augmentation); streaming it instead")
        return None
    xs, ys = [x0], [first[1]]
    for i in range(1, n):
        x, y = dataset[i]
        x_t = _as_tensor(x)
        if x_t is None or x_t.shape != x0.shape:
            return None
        xs.append(x_t)
        ys.append(y)
    inputs = torch.stack(xs)
    if y0 is not None:
        y_tensors = [_as_tensor(y) for y in ys]
        if any(t is None or t.shape != y0.shape for t in y_tensors):
            return None
        return inputs, torch.stack([t for t in y_tensors if t is not None])
    labels = np.asarray(ys)
    return inputs, torch.from_numpy(labels.astype(np.int64 if labels.dtype.kind in "iub" else np.float32))


def materialize(
    dataset: Dataset[Any], *, max_bytes: int = DEFAULT_MAX_DEVICE_BYTES
) -> tuple[Tensor, Tensor] | None:
    """All of a dataset as ``(inputs, targets)`` tensors, or ``None`` when it should be streamed.

    TensorDatasets (and Subsets of them) give their tensors directly; torchvision's MNIST-family
    and CIFAR datasets with ``ToTensor`` (+ ``Normalize``) are converted in one vectorised step;
    any other dataset of tensor pairs is read item by item once, unless it is larger than
    ``max_bytes`` or augments at random (a known random torchvision transform, or item 0 reading
    differently twice). The global RNG states are left as they were.

    Example:
        >>> x, y = materialize(TensorDataset(torch.zeros(3, 2), torch.arange(3)))
        >>> tuple(x.shape), y.tolist()
        ((3, 2), [0, 1, 2])
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        return None
    tensors = _fast_tensors(dataset)
    if tensors is not None:
        nbytes = tensors[0].nbytes + tensors[1].nbytes
        return tensors if nbytes <= max_bytes else None
    if any(_is_random_transform(t) for t in _transforms_of(dataset)):
        return None
    with _rng_preserved():
        return _stack_items(dataset, max_bytes)


def _fast_dict(dataset: Any) -> dict[str, Tensor] | None:
    """Tensors of a :class:`TensorDictDataset` (or a Subset of one)."""
    if isinstance(dataset, TensorDictDataset):
        return dict(dataset.tensors)
    if isinstance(dataset, Subset):
        base = _fast_dict(dataset.dataset)
        if base is None:
            return None
        index = torch.as_tensor(list(dataset.indices), dtype=torch.int64)
        return {key: t[index] for key, t in base.items()}
    return None


def _field_tensor(value: Any) -> Tensor | None:
    tensor = _as_tensor(value)
    if (
        tensor is None
        and isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
    ):
        tensor = torch.tensor(value)
    return tensor


def _stack_dict_items(dataset: Dataset[Any], max_bytes: int) -> dict[str, Tensor] | None:
    """Read every mapping item once and stack each key, when all are tensors of one shape and small enough."""
    n = len(dataset)  # type: ignore[arg-type]
    first = dataset[0]
    if not isinstance(first, Mapping) or not first:
        return None
    fields: dict[str, Tensor] = {}
    for key, value in first.items():
        tensor = _field_tensor(value)
        if tensor is None:
            return None
        fields[key] = tensor
    estimate = n * sum(t.nbytes for t in fields.values())
    if estimate > max_bytes:
        logger.debug("dataset of %d items (~%d MiB) is too large to keep on the device", n, estimate >> 20)
        return None
    again = dataset[0]
    for key, t in fields.items():
        other = _field_tensor(again.get(key)) if isinstance(again, Mapping) else None
        if other is None or other.shape != t.shape or not torch.equal(other, t):
            logger.debug("dataset items change between reads (random augmentation); streaming it instead")
            return None
    columns = {key: [t] for key, t in fields.items()}
    for i in range(1, n):
        item = dataset[i]
        if not isinstance(item, Mapping) or set(item) != set(columns):
            return None
        for key, column in columns.items():
            value = _field_tensor(item[key])
            if value is None or value.shape != column[0].shape:
                return None
            column.append(value)
    return {key: torch.stack(column) for key, column in columns.items()}


def materialize_dict(
    dataset: Dataset[Any], *, max_bytes: int = DEFAULT_MAX_DEVICE_BYTES
) -> dict[str, Tensor] | None:
    """All of a dataset of mapping items as one tensor per key, or ``None`` when it should be streamed.

    The mapping twin of :func:`materialize`: a :class:`TensorDictDataset` (or a Subset of one) gives its
    tensors directly; other datasets of mappings of tensors (or numbers) are read item by item once, unless
    larger than ``max_bytes`` or random. The global RNG states are left as they were.

    Example:
        >>> fields = materialize_dict(TensorDictDataset({"x": torch.zeros(3, 2), "labels": torch.arange(3)}))
        >>> sorted(fields), fields["labels"].tolist()
        (['labels', 'x'], [0, 1, 2])
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        return None
    fields = _fast_dict(dataset)
    if fields is not None:
        return fields if sum(t.nbytes for t in fields.values()) <= max_bytes else None
    if any(_is_random_transform(t) for t in _transforms_of(dataset)):
        return None
    with _rng_preserved():
        return _stack_dict_items(dataset, max_bytes)


def as_tensor_dataset(
    dataset: Dataset[Any], *, max_bytes: int = DEFAULT_MAX_DEVICE_BYTES
) -> TensorDataset | TensorDictDataset | None:
    """The dataset held as tensors (pairs or mappings), or ``None`` when it should be streamed."""
    tensors = materialize(dataset, max_bytes=max_bytes)
    if tensors is not None:
        return TensorDataset(*tensors)
    fields = materialize_dict(dataset, max_bytes=max_bytes)
    return TensorDictDataset(fields) if fields is not None else None


def default_num_workers() -> int:
    """DataLoader worker processes by default: ``min(4, CPU count)``."""
    return min(4, os.cpu_count() or 1)


def make_loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    shuffle: bool,
    device: torch.device | str,
    seed: int = 0,
    drop_last: bool = False,
    num_workers: int | None = None,
    max_device_bytes: int = DEFAULT_MAX_DEVICE_BYTES,
) -> DeviceBatches | DeviceDictBatches | DeviceLoader:
    """``(inputs, targets)`` (or mapping) batches of ``dataset`` on ``device``, the fastest way that fits.

    Args:
        dataset: a map-style dataset of ``(inputs, targets)`` pairs or of mappings of tensors.
        batch_size: samples per batch.
        shuffle: reshuffle every pass, from a generator seeded with ``seed``.
        device: where batches go (``"auto"`` and the other ``--device`` names are resolved).
        seed: seed of the shuffling generator.
        drop_last: drop the last, smaller batch.
        num_workers: DataLoader worker processes (default :func:`default_num_workers`).
        max_device_bytes: datasets up to this size are kept on the device (:class:`DeviceBatches`).

    Returns:
        :class:`DeviceBatches` when :func:`materialize` succeeds, :class:`DeviceDictBatches` when
        :func:`materialize_dict` does (mapping items), else a :class:`DeviceLoader`.
    """
    target = resolve_device(device) if isinstance(device, str) else torch.device(device)
    tensors = materialize(dataset, max_bytes=max_device_bytes)
    fields = materialize_dict(dataset, max_bytes=max_device_bytes) if tensors is None else None
    if fields is not None:
        return DeviceDictBatches(
            fields, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, device=target
        )
    if tensors is not None:
        inputs, targets = tensors
        return DeviceBatches(
            inputs,
            targets,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            device=target,
        )
    workers = default_num_workers() if num_workers is None else num_workers
    if workers < 0:
        raise UsageError(f"num_workers must be >= 0, got {num_workers=}")
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    loader: DataLoader[Any] = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=target.type == "cuda",
        generator=generator,
    )
    return DeviceLoader(loader, generator, target)
