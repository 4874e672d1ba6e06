"""The spatially invariant VAE: its coordinate machinery against the data's rotation (the
oracle: rendering at R(theta) c is the image turned by theta), its latent layout and
invariances, and a CLI run on rotated digits."""

from __future__ import annotations

import json
import math

import pytest
import torch
from ppl_vae.models.blocks.coords import coordinate_grid, transform_coordinates
from ppl_vae.models.ivae import IVAE

from ppl_vae.cli import main
from ppl_vae.data.rotated import rotate_images
from ppl_vae.errors import UserError


def pattern(c: torch.Tensor) -> torch.Tensor:
    """A smooth asymmetric toy image of the coordinates: two blobs of unequal size."""
    u, v = c[..., 0], c[..., 1]
    return torch.exp(-((u - 0.3) ** 2 + (v + 0.2) ** 2) / 0.05) + 0.6 * torch.exp(
        -((u + 0.25) ** 2 + (v - 0.3) ** 2) / 0.02
    )


@pytest.mark.parametrize("theta", [0.4, -1.0, math.pi / 2])
def test_rendering_at_rotated_coordinates_is_the_rotated_image(theta):
    grid = coordinate_grid((28, 28))
    upright = pattern(grid)[None]  # (1, 784)
    turned = rotate_images(upright, torch.tensor([theta]), (28, 28))
    rendered = pattern(transform_coordinates(grid, torch.tensor([theta]), torch.zeros(1, 2)))
    assert (turned - rendered).abs().max() < 0.05  # bilinear interpolation's error alone
    assert (upright - rendered).abs().max() > 0.3  # the turn moved the pattern


def test_a_shift_of_one_pixel_moves_the_rendered_image_by_one_column():
    grid = coordinate_grid((6, 7))  # u along a row: 7 columns 1/3 apart
    step = torch.tensor([[2 / 6, 0.0]])
    shifted = pattern(transform_coordinates(grid, torch.zeros(1), step)).reshape(6, 7)
    torch.testing.assert_close(shifted[:, :-1], pattern(grid).reshape(6, 7)[:, 1:])


def test_latent_layout_follows_the_invariances():
    z = torch.arange(7.0)[None]
    rt = IVAE(x_dim=64, latent_dim=4, invariances=["r", "t"], hidden=(8,), dx_prior=0.5)
    assert rt.latent_dim == 7 and float(rt.angle(z)) == 0.0
    assert rt.shift(z).tolist() == [[0.5, 1.0]] and rt.content(z).tolist() == [[3, 4, 5, 6]]
    t = IVAE(x_dim=64, latent_dim=4, invariances=["t"], hidden=(8,))
    assert t.latent_dim == 6 and float(t.angle(z[:, :6])) == 0.0
    assert IVAE(x_dim=64, latent_dim=4, invariances=[], hidden=(8,)).latent_dim == 4
    with pytest.raises(UserError, match="invariances"):
        IVAE(x_dim=64, invariances=["s"])
    with pytest.raises(UserError, match="one-channel images"):
        IVAE(x_dim=60)


def test_decoder_turns_its_canvas_by_the_angle_latent():
    """Two codes that differ only in the angle draw the same picture turned."""
    torch.manual_seed(0)
    m = IVAE(x_dim=28 * 28, latent_dim=2, invariances=["r"], hidden=(32, 32))
    z0 = torch.tensor([[0.0, 0.5, -0.3]])
    z1 = z0.clone()
    z1[0, 0] = 0.7
    turned = rotate_images(m.decode(z0), torch.tensor([0.7]), (28, 28))
    inside = coordinate_grid((28, 28)).norm(dim=-1) < 0.6  # clear of the corners
    err = (turned - m.decode(z1))[0, inside].abs().max()
    assert err < 0.05 and (m.decode(z0) - m.decode(z1))[0, inside].abs().max() > 5 * err


def test_cli_trains_on_rotated_digits_with_rotation_only(tmp_path):
    out = tmp_path / "ivae"
    args = ["train", "ivae", "--data", "digits-rotated", "--epochs", "1", "--no-progress"]
    args += ["--set", 'invariances=["r"]', "--hidden", "32", "--batch-size", "128"]
    assert main([*args, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["test_elbo"]) and metrics["rate"] is not None
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == "digits-rotated" and config["model_args"]["invariances"] == ["r"]
