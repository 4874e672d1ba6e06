"""Data sources: the bundled digits, .npz files, torchvision IDX files, validation."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from ppl_vae import data
from ppl_vae.errors import UserError


def test_digits_split_is_fixed_and_scaled(digits):
    assert digits.x_train.shape == (1437, 64) and digits.x_test.shape == (360, 64)
    assert digits.image_shape == (1, 8, 8)
    assert float(digits.x_train.min()) == 0.0 and float(digits.x_train.max()) == 1.0
    # Stratified: every class is in the test split, ~36 each.
    counts = torch.bincount(digits.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    again = data.load("digits")
    assert torch.equal(again.x_test, digits.x_test)


def test_minibatches_cover_each_example_once():
    g = torch.Generator().manual_seed(1)
    idx = torch.cat(list(data.minibatches(103, 10, g)))
    assert torch.equal(idx.sort().values, torch.arange(103))
    assert [len(b) for b in data.minibatches(103, 10, g)][-1] == 3


def test_static_and_dynamic_binarisation(digits):
    static = data.apply_binarization(digits, "static")
    assert set(static.x_train.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(static.x_train, (digits.x_train > 0.5).float())
    dyn = data.apply_binarization(digits, "dynamic")
    g = torch.Generator().manual_seed(0)
    a, b = dyn.train_epoch(g), dyn.train_epoch(g)
    assert set(a.unique().tolist()) <= {0.0, 1.0} and not torch.equal(a, b)
    # Each draw is Bernoulli(x): its mean over many epochs approaches x.
    mean = torch.stack([dyn.train_epoch(g) for _ in range(200)]).mean(0)
    assert (mean - digits.x_train).abs().max() < 0.15


def test_synthetic_is_linear_gaussian():
    ds = data.load_synthetic(n_train=4000, n_test=10, x_dim=6, latent_dim=2, noise=0.5)
    cov = torch.cov(ds.x_train.T)
    evals = torch.linalg.eigvalsh(cov)
    # Four of six directions carry only the noise variance 0.25.
    assert torch.allclose(evals[:4], torch.full((4,), 0.25), atol=0.03)


def test_npz_rows_and_images(tmp_path):
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(
        path, x_train=rng.random((20, 4, 4)), x_test=rng.random((5, 4, 4)), y_train=np.arange(20)
    )
    ds = data.load(str(path))
    assert ds.x_train.shape == (20, 16) and ds.image_shape == (1, 4, 4) and ds.y_test is None
    # rows are not images, whatever their width (100 word counts are not a 10x10 picture)
    np.savez(path, x_train=rng.random((20, 9)), x_test=rng.random((5, 9)))
    assert data.load(str(path)).image_shape is None


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x_train": np.zeros((4, 3))}, "lacks x_test"),
        ({"x_train": np.full((4, 3), np.nan), "x_test": np.zeros((2, 3))}, "NaN"),
        ({"x_train": np.zeros((4, 3)), "x_test": np.zeros((2, 5))}, "same width"),
        ({"x_train": np.zeros((4, 3, 2, 2)), "x_test": np.zeros((2, 3))}, "shape"),
        (
            {"x_train": np.zeros((4, 3)), "x_test": np.zeros((2, 3)), "y_train": np.zeros(3)},
            "labels",
        ),
    ],
)
def test_bad_npz_is_a_clear_error(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError, match=message):
        data.load(str(path))


def test_unknown_source_and_missing_file():
    with pytest.raises(UserError, match="unknown data source"):
        data.load("cifar")
    with pytest.raises(UserError, match="does not exist"):
        data.load("nope/missing.npz")


def write_idx(path, array: np.ndarray) -> None:
    """The IDX format torchvision reads: magic (dtype, ndim), big-endian dims, bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("source, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_idx_files(tmp_path, source, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {
        "train": rng.integers(0, 256, (12, 28, 28)),
        "t10k": rng.integers(0, 256, (5, 28, 28)),
    }
    for split, imgs in images.items():
        write_idx(raw / f"{split}-images-idx3-ubyte", imgs)
        write_idx(raw / f"{split}-labels-idx1-ubyte", np.arange(len(imgs)) % 10)
    ds = data.load(source, data_root=tmp_path)
    assert ds.x_train.shape == (12, 784) and ds.x_test.shape == (5, 784)
    assert ds.image_shape == (1, 28, 28)
    assert torch.allclose(
        ds.x_train[3] * 255, torch.as_tensor(images["train"][3]).float().flatten()
    )
    assert ds.y_test.tolist() == [0, 1, 2, 3, 4]


def test_missing_mnist_says_where_to_put_files(tmp_path):
    with pytest.raises(UserError, match="MNIST/raw"):
        data.load("mnist", data_root=tmp_path)
    with pytest.raises(UserError, match="--data-root"):
        data.load("mnist")


@pytest.mark.parametrize(
    "values, finite",
    [
        ([0.5, 1.0], True),
        ([3e38, 3e38], True),  # the sum overflows; every value is finite
        ([1.0, float("nan")], False),
        ([float("inf"), 1.0], False),
        ([float("inf"), -float("inf")], False),  # the sum is NaN
        ([], True),
    ],
)
def test_all_finite_is_isfinite_all(values, finite):
    x = torch.tensor(values, dtype=torch.float32)
    assert data.all_finite(x) is finite is bool(torch.isfinite(x).all())
    assert data.all_finite(x.to(torch.float16)) is bool(torch.isfinite(x.half()).all())
