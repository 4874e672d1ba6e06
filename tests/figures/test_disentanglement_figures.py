"""Traversal figures: one row per latent, the decoded codes vary only along that latent."""

from __future__ import annotations

import pytest
import torch

from ppl_vae.errors import UserError
from ppl_vae.figures.disentanglement import row_label, save_figure, traversal_figure


def test_rows_traverse_one_latent_each(tmp_path):
    seen = []

    def decode(z):
        seen.append(z.clone())
        return torch.sigmoid(z[:, :1] + z[:, 1:2]).expand(-1, 12)

    base = torch.tensor([0.5, -1.0, 2.0])
    latents = [
        {"latent": 0, "factor": "scale", "normalized_mi": 0.71, "active": True},
        {"latent": 2, "factor": "shape", "normalized_mi": 0.02, "active": False},
    ]
    fig = traversal_figure(decode, base, (3, 4), latents=latents, values=[-1.0, 0.0, 1.0])
    z = seen[0].reshape(3, 3, 3)
    for row in range(3):
        assert torch.equal(z[row, :, row], torch.tensor([-1.0, 0.0, 1.0]))
        others = [j for j in range(3) if j != row]
        assert torch.equal(z[row][:, others], base[others].expand(3, 2))
    assert len(fig.axes) == 9
    labels = [fig.axes[3 * r].get_ylabel() for r in range(3)]
    assert labels == ["z0: scale (0.71)", "z1", "z2: inactive"]
    assert save_figure(fig, tmp_path / "t.png").stat().st_size > 0


def test_bad_decode_or_dims():
    with pytest.raises(UserError, match="decode"):
        traversal_figure(lambda z: z, torch.zeros(2), (4, 4))
    with pytest.raises(UserError, match="dims"):
        traversal_figure(lambda z: z, torch.zeros(2), (1, 2), dims=[5])
    assert row_label(3, None) == "z3"
