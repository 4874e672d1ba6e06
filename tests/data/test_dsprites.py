"""The procedural dSprites grid: indexing, rendering oracles, data sets, the original loader."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ppl_vae import data
from ppl_vae.data import dsprites
from ppl_vae.errors import UserError


@pytest.fixture(scope="module")
def full() -> dsprites.FactorData:
    return dsprites.factor_data("dsprites")


@pytest.fixture(scope="module")
def small() -> dsprites.FactorData:
    return dsprites.factor_data("dsprites-small")


def test_full_grid_matches_dsprites(full):
    assert full.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    assert full.factor_sizes == (3, 6, 40, 32, 32) and full.num_combinations == 737280
    assert full.image_shape == (64, 64)
    np.testing.assert_allclose(full.factor_values[1], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    orient = full.factor_values[2]
    assert orient[0] == 0 and orient[-1] < 2 * np.pi and np.allclose(np.diff(orient), np.pi / 20)
    assert full.factor_values[3][0] == 0 and full.factor_values[3][-1] == 1


def test_index_and_classes_round_trip(full, small):
    for fd in (full, small):
        idx = torch.from_numpy(np.random.default_rng(0).integers(0, fd.num_combinations, 500))
        c = fd.classes(idx)
        assert c.dtype == torch.int64 and c.shape == (500, 5)
        assert torch.equal(fd.index(c), idx)
        assert torch.equal(fd.classes(fd.index(c)), c)
    # Row-major: the last factor (posY) runs fastest, as in the original file.
    assert full.classes([1]).tolist() == [[0, 0, 0, 0, 1]]
    assert full.classes([32]).tolist() == [[0, 0, 0, 1, 0]]
    assert full.classes([737279]).tolist() == [[2, 5, 39, 31, 31]]
    v = full.values(full.classes([737279]))
    np.testing.assert_allclose(v[0].numpy(), [2, 1.0, 2 * np.pi * 39 / 40, 1.0, 1.0])
    with pytest.raises(UserError, match="out of range"):
        full.classes([737280])
    with pytest.raises(UserError, match="shape"):
        full.images(np.zeros((2, 4), dtype=int))


def test_images_are_binary_float_rows(full, small):
    rng = np.random.default_rng(1)
    for fd, pixels in ((full, 4096), (small, 1024)):
        x = fd.images(fd.sample_factors(300, rng))
        assert x.dtype == torch.float32 and x.shape == (300, pixels)
        assert set(x.unique().tolist()) == {0.0, 1.0}
        assert (x.sum(1) > 0).all()  # every sprite is visible


@pytest.mark.parametrize("name", ["dsprites", "dsprites-small"])
def test_each_factor_changes_the_image(name):
    fd = dsprites.factor_data(name)
    base = np.array([[1, 1, 1, 3, 3]])  # an ellipse: changed by any turn short of a half
    x0 = fd.images(base)
    for k in range(5):
        moved = base.copy()
        moved[0, k] += 1
        assert (fd.images(moved) != x0).any(), fd.factor_names[k]


def test_rendering_oracles(full):
    side, r0 = 64, 64 / 7
    # Areas, averaged over all 32 x 32 positions (so the pixel grid's offset averages out):
    # square (2 s r0)^2, ellipse pi * 1 * 0.5 * (s r0)^2, within 2%.
    pos = np.stack(np.unravel_index(np.arange(1024), (32, 32)), axis=1)
    for scale_class, s in ((0, 0.5), (5, 1.0)):
        for shape, area in ((0, (2 * s * r0) ** 2), (1, math.pi * 0.5 * (s * r0) ** 2)):
            c = np.column_stack([np.full((1024, 3), (shape, scale_class, 0)), pos])
            assert float(full.images(c).sum(1).mean()) == pytest.approx(area, rel=0.02)

    # A quarter turn leaves a square unchanged (10 of 40 orientation steps), a half turn an
    # ellipse; a heart is changed by both.
    def img(shape, orient):
        return full.images([[shape, 5, orient, 10, 20]])

    assert torch.equal(img(0, 0), img(0, 10))
    assert torch.equal(img(1, 3), img(1, 23))
    assert not torch.equal(img(2, 0), img(2, 10)) and not torch.equal(img(2, 0), img(2, 20))
    # posX moves the centroid right, posY down, in equal steps; extremes stay inside.
    grid = torch.arange(side) + 0.5

    def centroid(c):
        im = full.images([c]).reshape(side, side)
        return float((im.sum(0) * grid).sum() / im.sum()), float(
            (im.sum(1) * grid).sum() / im.sum()
        )

    step = (side - 2 * (math.sqrt(2) * r0 + 0.5)) / 31
    x0, y0 = centroid([0, 5, 0, 0, 0])
    x1, y1 = centroid([0, 5, 0, 31, 31])
    assert x1 - x0 == pytest.approx(31 * step, abs=1) and y1 - y0 == pytest.approx(31 * step, abs=1)
    for c in ([0, 5, 5, 0, 0], [0, 5, 5, 31, 31], [2, 5, 13, 0, 31]):
        im = full.images([c]).reshape(side, side)
        border = torch.cat([im[0], im[-1], im[:, 0], im[:, -1]])
        assert border.sum() == 0


def test_load_small_split_is_fixed_and_keeps_factors(small):
    ds = dsprites.load("dsprites-small", n=1000, seed=3)
    assert isinstance(ds, data.Dataset) and isinstance(ds, dsprites.FactorDataset)
    data.validate(ds)
    assert ds.x_train.shape == (800, 1024) and ds.x_test.shape == (200, 1024)
    assert ds.image_shape == (1, 32, 32) and ds.in_unit_interval
    assert torch.equal(ds.x_train, small.images(ds.c_train))
    assert torch.equal(ds.y_test, ds.c_test[:, 0])  # labels are the shape class
    i_train, i_test = small.index(ds.c_train), small.index(ds.c_test)
    assert len(set(i_train.tolist()) | set(i_test.tolist())) == 1000  # distinct, disjoint
    again = dsprites.load("dsprites-small", n=1000, seed=3)
    assert torch.equal(again.c_test, ds.c_test)
    other = dsprites.load("dsprites-small", n=1000, seed=4)
    assert not torch.equal(other.c_test, ds.c_test)
    moved = ds.to("cpu")  # Dataset.to keeps the subclass and its factors
    assert isinstance(moved, dsprites.FactorDataset) and moved.factors is ds.factors
    assert torch.equal(moved.c_train, ds.c_train)
    everything = dsprites.load("dsprites-small")
    assert len(everything.x_train) + len(everything.x_test) == 4608


def test_load_full_grid_sample():
    ds = dsprites.load("dsprites", n=50, test_fraction=0.2, seed=0)
    assert ds.x_train.shape == (40, 4096) and ds.c_test.shape == (10, 5)
    with pytest.raises(UserError, match="combinations"):
        dsprites.load("dsprites-small", n=5000)
    with pytest.raises(UserError, match="unknown"):
        dsprites.factor_data("dsprites-large")


def _fake_original(path, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tiny file in the original format: colour 1, shape 3, scale 2, orient 2, x 2, y 2."""
    sizes = (1, 3, 2, 2, 2, 2)
    classes = np.stack(np.unravel_index(np.arange(math.prod(sizes)), sizes), axis=1)
    values = classes * np.array([1.0, 1.0, 0.5, 3.0, 0.25, 0.125]) + np.array([1, 1, 0.5, 0, 0, 0])
    imgs = rng.integers(0, 2, size=(len(classes), 8, 8)).astype(np.uint8)
    order = rng.permutation(len(classes))  # rows need not be in grid order
    np.savez_compressed(
        path,
        imgs=imgs[order],
        latents_classes=classes[order],
        latents_values=values[order],
        metadata=np.array({"not": "read"}, dtype=object),
    )
    return classes[:, 1:], values[:, 1:], imgs


def test_original_file_loader_on_a_fake_file(tmp_path):
    rng = np.random.default_rng(0)
    classes, values, imgs = _fake_original(tmp_path / dsprites.ORIGINAL_FILE, rng)
    fd = dsprites.factor_data("dsprites-original", data_root=tmp_path)
    assert fd.factor_sizes == (3, 2, 2, 2, 2) and fd.image_shape == (8, 8)
    np.testing.assert_allclose(fd.factor_values[1], [0.5, 1.0])
    np.testing.assert_allclose(fd.values(classes).numpy(), values)
    x = fd.images(classes)
    assert x.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy(imgs.reshape(len(imgs), -1).astype(np.float32)))
    ds = dsprites.load("dsprites-original", n=40, data_root=tmp_path / dsprites.ORIGINAL_FILE)
    assert ds.x_train.shape == (32, 64)
    assert torch.equal(ds.x_test, fd.images(ds.c_test))


def test_original_file_errors(tmp_path):
    with pytest.raises(UserError, match="--data-root"):
        dsprites.factor_data("dsprites-original")
    with pytest.raises(UserError, match="does not exist"):
        dsprites.load_original(tmp_path)
    bad = tmp_path / "bad.npz"
    np.savez(bad, imgs=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(UserError, match="could not read"):
        dsprites.load_original(bad)
