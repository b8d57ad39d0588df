"""Tests for lrtune.data: devices, device-resident batches, materializing datasets, make_loader."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset, TensorDataset

from lrtune import data
from lrtune.data import DeviceBatches, DeviceLoader, make_loader, materialize, resolve_device
from lrtune.errors import DeviceError, UsageError
from lrtune.tasks import load_task


def size(dataset: Any) -> int:
    return len(dataset)


def epoch_targets(loader: Iterable[tuple[Tensor, Tensor]]) -> list[int]:
    return torch.cat([y for _, y in loader]).tolist()


# --------------------------------------------------------------------------- devices


def test_resolve_device_cpu_and_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device() == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_resolve_device_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="--device cuda was requested but no CUDA GPU is available") as info:
        resolve_device("cuda")
    assert info.value.exit_code == 2
    with pytest.raises(DeviceError, match="--device cuda:1 was requested"):
        resolve_device("cuda:1")
    with pytest.raises(DeviceError, match="--device mps was requested but Apple's MPS backend"):
        resolve_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DeviceError, match="only 2 CUDA GPU"):
        resolve_device("cuda:2")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    for bad in ("tpu", "CPU", "cuda:x", ""):
        with pytest.raises(UsageError, match="unknown device") as bad_info:
            resolve_device(bad)
        assert not isinstance(bad_info.value, DeviceError)


# --------------------------------------------------------------------------- DeviceBatches


def make_batches(n: int = 10, batch_size: int = 4, **kwargs: Any) -> DeviceBatches:
    inputs = torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, 3)
    kwargs.setdefault("shuffle", True)
    return DeviceBatches(inputs, torch.arange(n), batch_size=batch_size, **kwargs)


def test_every_sample_once_per_epoch_and_pairs_kept_together() -> None:
    batches = make_batches(n=10, batch_size=4)
    assert len(batches) == 3
    orders = []
    for _ in range(3):
        sizes, seen = [], []
        for x, y in batches:
            assert torch.equal(x[:, 0].long(), y)  # inputs and targets stay paired
            sizes.append(len(y))
            seen += y.tolist()
        assert sizes == [4, 4, 2] and sorted(seen) == list(range(10))
        orders.append(seen)
    assert orders[0] != orders[1] != orders[2]  # each pass reshuffles


def test_drop_last_and_no_shuffle() -> None:
    dropped = make_batches(n=10, batch_size=4, drop_last=True)
    assert len(dropped) == 2 and [len(y) for _, y in dropped] == [4, 4]
    ordered = make_batches(n=10, batch_size=4, shuffle=False)
    assert epoch_targets(ordered) == list(range(10)) == epoch_targets(ordered)


def test_same_seed_same_order_reseed_changes_it() -> None:
    a, b = make_batches(n=50, seed=3), make_batches(n=50, seed=3)
    first = [epoch_targets(a) for _ in range(2)]
    assert first == [epoch_targets(b) for _ in range(2)]
    a.reseed(4)
    assert epoch_targets(a) != first[0]
    a.reseed(3)
    assert epoch_targets(a) == first[0]
    assert epoch_targets(make_batches(n=50, seed=5)) != first[0]


def test_device_batches_never_touch_the_global_rng() -> None:
    state = torch.random.get_rng_state()
    batches = make_batches(n=100, seed=1)
    for _ in range(3):
        epoch_targets(batches)
    batches.reseed(2)
    epoch_targets(batches)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_device_batches_validate_their_inputs() -> None:
    with pytest.raises(UsageError, match="same number of samples"):
        DeviceBatches(torch.zeros(5, 2), torch.zeros(4), batch_size=2, shuffle=False)
    with pytest.raises(UsageError, match="batch_size must be an integer >= 1"):
        DeviceBatches(torch.zeros(5, 2), torch.zeros(5), batch_size=0, shuffle=False)


# --------------------------------------------------------------------------- materialize


class ListDataset(Dataset[tuple[Any, Any]]):
    """Items computed on access, like most users' datasets."""

    def __init__(self, n: int, target: str = "int", noise: bool = False) -> None:
        self.n, self.target, self.noise = n, target, noise

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        x = torch.full((2, 3), float(i))
        if self.noise:
            x = x + torch.rand(2, 3)  # random augmentation through the global RNG
        y: Any = {"int": i % 3, "float": i / 2, "tensor": torch.tensor([i, -i]), "numpy": np.float32(i)}[
            self.target
        ]
        return x, y


def test_tensor_datasets_give_their_tensors() -> None:
    x, y = torch.randn(6, 2), torch.arange(6)
    got = materialize(TensorDataset(x, y))
    assert got is not None and got[0] is x and got[1] is y
    sub = materialize(Subset(TensorDataset(x, y), [4, 1]))
    assert sub is not None and torch.equal(sub[0], x[[4, 1]]) and sub[1].tolist() == [4, 1]
    assert materialize(TensorDataset(x, y), max_bytes=10) is None


@pytest.mark.parametrize(
    ("target", "dtype", "expected"),
    [
        ("int", torch.int64, [0, 1, 2, 0]),
        ("float", torch.float32, [0.0, 0.5, 1.0, 1.5]),
        ("numpy", torch.float32, [0.0, 1.0, 2.0, 3.0]),
        ("tensor", torch.int64, [[0, 0], [1, -1], [2, -2], [3, -3]]),
    ],
)
def test_items_are_stacked(target: str, dtype: torch.dtype, expected: list[Any]) -> None:
    got = materialize(ListDataset(4, target))
    assert got is not None
    assert got[0].shape == (4, 2, 3) and got[0][:, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert got[1].dtype == dtype and got[1].tolist() == expected


def test_random_or_large_or_odd_datasets_are_streamed() -> None:
    rng_state = torch.random.get_rng_state()
    np_state, py_state = np.random.get_state(legacy=False), random.getstate()
    assert materialize(ListDataset(4, noise=True)) is None
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert (
        np.array_equal(np.random.get_state(legacy=False)["state"]["key"], np_state["state"]["key"])
        and random.getstate() == py_state
    )
    assert materialize(ListDataset(100), max_bytes=100 * 32 - 1) is None
    assert materialize(ListDataset(100), max_bytes=100 * 32) is not None  # 24 bytes of input + 8 of label

    class Pairs(ListDataset):
        def __getitem__(self, i: int) -> tuple[Any, Any]:
            return f"image{i}", i

    assert materialize(Pairs(3)) is None


def test_known_random_transforms_skip_stacking() -> None:
    from torchvision import transforms

    class WithTransform(ListDataset):
        transform = transforms.Compose(
            [transforms.RandomHorizontalFlip(), transforms.Normalize((0.5,), (0.5,))]
        )

        def __getitem__(self, i: int) -> tuple[Any, Any]:
            raise AssertionError("a dataset with random augmentation must not be read")

    assert materialize(WithTransform(3)) is None
    assert materialize(Subset(WithTransform(3), [0])) is None


def test_mnist_fast_path_equals_reading_every_item(fake_mnist_dir: Path) -> None:
    task = load_task("mnist", data_dir=fake_mnist_dir, download=False)
    fast = materialize(task.train)
    assert fast is not None
    slow_x = torch.stack([task.train[i][0] for i in range(size(task.train))])
    slow_y = torch.tensor([task.train[i][1] for i in range(size(task.train))])
    assert fast[0].shape == (43, 1, 28, 28)  # the official 48 less the 5 held out for validation
    assert torch.equal(fast[0], slow_x) and torch.equal(fast[1], slow_y)


# --------------------------------------------------------------------------- make_loader


def test_make_loader_keeps_digits_on_the_device() -> None:
    task = load_task("digits")
    loader = make_loader(task.train, batch_size=64, shuffle=True, device="cpu", seed=0)
    assert isinstance(loader, DeviceBatches)
    assert len(loader) == 23 and sorted(epoch_targets(loader)) == sorted(task.train.tensors[1].tolist())  # type: ignore[attr-defined]


def test_make_loader_streams_a_large_dataset() -> None:
    task = load_task("digits")
    expected = sorted(task.train.tensors[1].tolist())  # type: ignore[attr-defined]
    loader = make_loader(
        task.train,
        batch_size=64,
        shuffle=True,
        device=torch.device("cpu"),
        seed=0,
        num_workers=0,
        max_device_bytes=0,
    )
    assert isinstance(loader, DeviceLoader) and not loader.loader.pin_memory
    assert len(loader) == 23
    first = epoch_targets(loader)
    assert sorted(first) == expected and epoch_targets(loader) != first
    loader.reseed(0)
    assert epoch_targets(loader) == first
    state = torch.random.get_rng_state()
    epoch_targets(loader)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_make_loader_with_worker_processes() -> None:
    dataset = ListDataset(20, noise=True)  # random augmentation: not materialized
    loader = make_loader(dataset, batch_size=8, shuffle=False, device="cpu", num_workers=1, drop_last=True)
    assert isinstance(loader, DeviceLoader) and loader.loader.persistent_workers
    assert [x.shape[0] for x, _ in loader] == [8, 8]
    assert epoch_targets(loader) == [i % 3 for i in range(16)]


def test_make_loader_defaults() -> None:
    assert data.default_num_workers() == min(4, os.cpu_count() or 1)
    with pytest.raises(UsageError, match="num_workers must be >= 0"):
        make_loader(ListDataset(4, noise=True), batch_size=2, shuffle=False, device="cpu", num_workers=-1)


# --------------------------------------------------------------------------- mapping datasets


class DictItems(Dataset[dict[str, Any]]):
    """Mapping items ``{"input_ids": [i, i+1, i+2], "labels": i % 3}``, optionally with random noise."""

    def __init__(self, n: int, *, noise: bool = False) -> None:
        self.n, self.noise = n, noise

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        ids = torch.arange(i, i + 3)
        if self.noise:
            ids = ids + torch.randint(0, 1000, (3,))
        return {"input_ids": ids, "labels": i % 3}


def test_device_dict_batches_shuffle_every_pass_and_keep_fields_together() -> None:
    ids = torch.arange(10).unsqueeze(1).repeat(1, 4)
    batches = data.DeviceDictBatches(
        {"input_ids": ids, "labels": torch.arange(10)}, batch_size=4, shuffle=True
    )
    orders = []
    for _ in range(2):
        seen = []
        for batch in batches:
            assert set(batch) == {"input_ids", "labels"}
            assert torch.equal(batch["input_ids"][:, 0], batch["labels"])
            seen += batch["labels"].tolist()
        assert sorted(seen) == list(range(10))
        orders.append(seen)
    assert orders[0] != orders[1] and len(batches) == 3
    batches.reseed(0)
    assert [v for b in batches for v in b["labels"].tolist()] == orders[0]
    with pytest.raises(UsageError, match="same number of samples"):
        data.DeviceDictBatches({"a": torch.zeros(3), "b": torch.zeros(4)}, batch_size=2, shuffle=False)
    with pytest.raises(UsageError, match="batch_size must be an integer"):
        data.DeviceDictBatches({"a": torch.zeros(3)}, batch_size=0, shuffle=False)


def test_materialize_dict_stacks_mapping_items_and_leaves_the_rngs_alone() -> None:
    state = torch.random.get_rng_state()
    fields = data.materialize_dict(DictItems(5))
    assert fields is not None and set(fields) == {"input_ids", "labels"}
    assert fields["input_ids"].tolist()[4] == [4, 5, 6] and fields["labels"].tolist() == [0, 1, 2, 0, 1]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert data.materialize_dict(DictItems(5, noise=True)) is None  # random: streamed
    assert data.materialize_dict(DictItems(100), max_bytes=100 * 32 - 1) is None  # 3·8 + 8 bytes per item
    assert data.materialize_dict(TensorDataset(torch.zeros(3, 1), torch.zeros(3))) is None  # pairs
    assert materialize(DictItems(5)) is None  # and the pair path leaves mappings alone
    tensors = {"input_ids": torch.arange(6).reshape(3, 2), "labels": torch.arange(3)}
    sub = data.materialize_dict(Subset(data.TensorDictDataset(tensors), [2, 0]))
    assert (
        sub is not None and sub["labels"].tolist() == [2, 0] and sub["input_ids"].tolist() == [[4, 5], [0, 1]]
    )


def test_make_loader_serves_mapping_datasets_from_the_device_or_streams_them() -> None:
    resident = make_loader(DictItems(10), batch_size=4, shuffle=False, device="cpu")
    assert isinstance(resident, data.DeviceDictBatches)
    assert [b["labels"].tolist() for b in resident] == [[0, 1, 2, 0], [1, 2, 0, 1], [2, 0]]
    streamed = make_loader(
        DictItems(10, noise=True), batch_size=4, shuffle=False, device="cpu", num_workers=0
    )
    assert isinstance(streamed, DeviceLoader)
    assert [b["labels"].tolist() for b in streamed] == [[0, 1, 2, 0], [1, 2, 0, 1], [2, 0]]
    assert isinstance(data.as_tensor_dataset(DictItems(4)), data.TensorDictDataset)
    assert isinstance(data.as_tensor_dataset(TensorDataset(torch.zeros(2, 1), torch.zeros(2))), TensorDataset)
    assert data.as_tensor_dataset(DictItems(4, noise=True)) is None
