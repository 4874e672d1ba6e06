"""Rotated digits: fixed-seed angles in range, kept on the data set, and each image the
upright one turned by its angle."""

from __future__ import annotations

import math

import pytest
import torch

from ppl_vae import data
from ppl_vae.data import rotated


def test_rotated_digits_keep_labels_and_fixed_angles_in_range():
    ds, plain = data.load("digits-rotated"), data.load("digits")
    assert ds.name == "digits-rotated" and ds.image_shape == plain.image_shape
    assert torch.equal(ds.y_train, plain.y_train) and torch.equal(ds.y_test, plain.y_test)
    for split in ("train", "test"):
        angles = getattr(ds, f"angle_{split}")
        assert angles.shape == (getattr(ds, f"x_{split}").shape[0],)
        assert angles.abs().max() <= rotated.MAX_ANGLE and angles.std() > 0.5  # ~U(-60, 60)
    again = data.load("digits-rotated", binarize="threshold")
    assert torch.equal(again.angle_test, ds.angle_test)  # the same draw whatever the run
    assert again.x_train.unique().tolist() == [0.0, 1.0]
    assert not torch.allclose(ds.x_train, plain.x_train)


@pytest.mark.parametrize("index", [0, 7, 100])
def test_each_image_is_its_upright_image_turned_back(index):
    """Turning a rotated digit back by its angle recovers the upright digit where the
    turn kept it inside the frame (bilinear interpolation blurs a little)."""
    ds, plain = data.load("digits-rotated"), data.load("digits")
    x, angle = ds.x_train[index : index + 1], ds.angle_train[index : index + 1]
    back = rotated.rotate_images(x, -angle, (8, 8)).reshape(8, 8)
    upright = plain.x_train[index].reshape(8, 8)
    centre = slice(2, 6)  # inside the inscribed circle
    err = (back[centre, centre] - upright[centre, centre]).abs().mean()
    assert err < 0.25 * upright[centre, centre].abs().mean() + 0.05


def test_rotation_by_a_quarter_turn_is_a_transpose_and_flip():
    """On the pixel grid a turn by 90 degrees moves pixels exactly: pixel (row i, column j)
    sits at c = (u_j, v_i), and x(R c) with R c = (-v_i, u_j) reads row j, column W-1-i."""
    img = torch.rand(5, 5)
    out = rotated.rotate_images(img.reshape(1, -1), torch.tensor([math.pi / 2]), (5, 5))
    expected = torch.tensor([[float(img[j, 4 - i]) for j in range(5)] for i in range(5)])
    torch.testing.assert_close(out.reshape(5, 5), expected, atol=1e-5, rtol=0)
