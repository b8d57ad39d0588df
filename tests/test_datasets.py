"""Tests for lrtune.datasets, through the built-in tasks that read it: torchvision sets and image folders."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lrtune.datasets import _torchvision_splits, stratified_split
from lrtune.errors import DataUnavailableError, TaskError
from lrtune.tasks import imagefolder_task, load_task


def size(dataset: Any) -> int:
    return len(dataset)


# --------------------------------------------------------------------------- torchvision tasks


def test_mnist_missing_without_download(tmp_path: Path) -> None:
    data_dir = tmp_path / "nowhere"
    with pytest.raises(DataUnavailableError) as info:
        load_task("mnist", data_dir=data_dir, download=False)
    message = str(info.value)
    assert "MNIST is not in" in message and str(data_dir / "MNIST") in message
    assert "train-images-idx3-ubyte" in message and "--data-dir" in message and "downloads are off" in message
    assert "\n" not in message
    assert not data_dir.exists()


def test_failed_download_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    def offline(*args: Any, **kwargs: Any) -> Any:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    data_dir = tmp_path / "data"
    for name, label, expected in [
        ("fashion-mnist", "Fashion-MNIST", "t10k-labels-idx1-ubyte"),
        ("cifar10", "CIFAR10", "data_batch_1 to data_batch_5, test_batch"),
    ]:
        with pytest.raises(DataUnavailableError) as info:
            load_task(name, data_dir=data_dir, download=True)
        message = str(info.value)
        assert message.startswith(f"{label} is not in {data_dir}")
        assert "could not be downloaded" in message and "Name or service not known" in message
        assert expected in message and "\n" not in message
    assert not data_dir.exists()  # the folders made for the download were removed again
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_mnist_and_fashion_mnist_read_local_files(fake_mnist_dir: Path) -> None:
    mnist = load_task("mnist", data_dir=fake_mnist_dir, download=False)
    # val: 10% of the official 48 training images (round(4.8) = 5); test: the official 16.
    assert (size(mnist.train), size(mnist.val), size(mnist.test), mnist.batch_size) == (43, 5, 16, 128)
    train_idx, val_idx = list(mnist.train.indices), list(mnist.val.indices)  # type: ignore[attr-defined]
    assert sorted(train_idx + val_idx) == list(range(48))  # disjoint, together the official train set
    assert mnist.train.dataset.train and not mnist.test.train  # type: ignore[attr-defined,union-attr]
    assert len({mnist.val[i][1] for i in range(5)}) == 5  # stratified: 5 different classes
    again = load_task("mnist", data_dir=fake_mnist_dir, download=False)
    assert list(again.val.indices) == val_idx  # type: ignore[attr-defined]
    image, label = mnist.test[0]
    assert image.shape == (1, 28, 28) and label == 0
    assert mnist.model()(image.unsqueeze(0)).shape == (1, 10)
    fashion = load_task("fashion-mnist", data_dir=fake_mnist_dir, download=True)  # present: no download
    assert fashion.model()(torch.stack([fashion.val[i][0] for i in range(2)])).shape == (2, 10)
    assert (size(fashion.train), size(fashion.val), size(fashion.test)) == (43, 5, 16)


def test_torchvision_val_is_carved_from_train_without_augmentation(fake_mnist_dir: Path) -> None:
    """CIFAR-10's path: train augments, val (from the official train set) and test do not."""
    from torchvision import datasets, transforms

    plain = transforms.ToTensor()
    augment = transforms.Compose([transforms.RandomCrop(28, padding=4), transforms.ToTensor()])
    train, val, test = _torchvision_splits(
        "MNIST", "mnist", datasets.MNIST, data_dir=fake_mnist_dir, download=False, folder="MNIST",
        files=["raw/..."], train_transform=augment, val_transform=plain,
    )  # fmt: skip
    assert (size(train), size(val), size(test)) == (43, 5, 16)
    assert train.dataset.transform is augment and test.transform is plain  # type: ignore[attr-defined]
    assert val.dataset.transform is plain  # type: ignore[attr-defined]
    assert val.dataset.data is train.dataset.data  # the same images, not a second copy  # type: ignore[attr-defined]
    first = val.indices[0]  # type: ignore[attr-defined]
    expected = torch.from_numpy(val.dataset.data[first].numpy()).float().div(255)  # type: ignore[attr-defined]
    assert torch.equal(val[0][0][0], expected)  # exactly the image, never cropped


def test_stratified_split_is_exact_proportional_and_deterministic() -> None:
    labels = np.repeat(np.arange(3), [50, 30, 20])
    kept, held = stratified_split(labels, 10, seed=3)
    assert len(held) == 10 and len(kept) == 90
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(100))
    assert np.bincount(labels[held]).tolist() == [5, 3, 2]
    assert np.array_equal(stratified_split(labels, 10, seed=3)[1], held)
    assert not np.array_equal(stratified_split(labels, 10, seed=4)[1], held)
    _, few = stratified_split(np.arange(20) % 10, 5)  # fewer held out than classes
    assert len(few) == 5 and len(set((np.arange(20) % 10)[few].tolist())) == 5
    with pytest.raises(ValueError, match="held_out=11"):
        stratified_split(np.zeros(10), 11)


# --------------------------------------------------------------------------- image folders


def make_images(root: Path, counts: dict[str, int], size: tuple[int, int] = (12, 9)) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_imagefolder_task(tmp_path: Path) -> None:
    make_images(tmp_path / "pets", {"cat": 10, "dog": 5, "eel": 1})
    (tmp_path / "pets" / ".ipynb_checkpoints").mkdir()
    task = load_task(f"imagefolder:{tmp_path / 'pets'}")
    assert task.name == "imagefolder-pets"
    # 10% of each class (at least one) goes to validation; a class of one image trains only.
    assert (size(task.train), size(task.val)) == (14, 2)
    assert sorted(task.val[i][1] for i in range(size(task.val))) == [0, 1]  # cat=0, dog=1, eel=2
    image, _ = task.train[0]
    assert image.shape == (3, 32, 32) and image.min() >= -1.0 and image.max() <= 1.0
    assert task.model()(image.unsqueeze(0)).shape == (1, 3)
    again = imagefolder_task(tmp_path / "pets")
    assert again.val.indices == task.val.indices  # type: ignore[attr-defined]


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match="does not exist; expected one sub-folder per class"):
        load_task(f"imagefolder:{tmp_path / 'missing'}")
    make_images(tmp_path / "one", {"cat": 3})
    with pytest.raises(TaskError, match=r"has 1 class sub-folder\(s\) \(cat\); at least 2"):
        load_task(f"imagefolder:{tmp_path / 'one'}")
    make_images(tmp_path / "empty", {"cat": 3})
    (tmp_path / "empty" / "dog").mkdir()
    with pytest.raises(TaskError, match="Found no valid file for the classes dog"):
        load_task(f"imagefolder:{tmp_path / 'empty'}")
    make_images(tmp_path / "few", {"cat": 1, "dog": 1})
    with pytest.raises(TaskError, match="too few images"):
        load_task(f"imagefolder:{tmp_path / 'few'}")
    with pytest.raises(TaskError, match="imagefolder needs a path"):
        load_task("imagefolder:")
