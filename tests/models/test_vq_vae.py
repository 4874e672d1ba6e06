"""VQ-VAE: nearest-code assignment against brute force, the straight-through gradient, the
codebook and commitment gradients, the code prior fitted by counts after training, and the
CLI's train, evaluate and sample."""

from __future__ import annotations

import json
import math

import torch
from ppl_vae.models.blocks import codebook as vq
from ppl_vae.models.vq_vae import VQVAE

from ppl_vae import data
from ppl_vae.cli import main
from ppl_vae.infer import TrainConfig, fit


def brute_force_nearest(z: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    """Every distance written out, ``(z - e)^2`` summed, then the argmin."""
    return ((z[..., None, :] - book) ** 2).sum(-1).argmin(-1)


def test_nearest_code_is_the_brute_force_argmin():
    g = torch.Generator().manual_seed(1)
    z, book = torch.randn(6, 3, 4, generator=g), torch.randn(9, 4, generator=g)
    k = vq.nearest(z, book)
    assert torch.equal(k, brute_force_nearest(z, book))
    for n, p in [(0, 0), (5, 2)]:  # and by hand, one point at a time
        dists = [float(((z[n, p] - e) ** 2).sum()) for e in book]
        assert int(k[n, p]) == min(range(9), key=dists.__getitem__)


def test_straight_through_passes_the_decoders_gradient_to_the_encoder():
    z_e = torch.randn(5, 3, requires_grad=True)
    z_q = torch.randn(5, 3)
    w = torch.randn(5, 3)
    out = vq.straight_through(z_e, z_q)
    torch.testing.assert_close(out, z_q)  # the value is the code
    (out * w).sum().backward()
    torch.testing.assert_close(z_e.grad, w)  # the gradient at the code, on z_e


def test_codebook_term_moves_codes_and_commitment_moves_the_encoder():
    z_e = torch.randn(4, 2, 3, requires_grad=True)
    z_q = torch.randn(4, 2, 3, requires_grad=True)
    loss = vq.vq_terms(z_e, z_q, beta=0.25)
    torch.testing.assert_close(loss, 1.25 * ((z_e - z_q) ** 2).sum((-1, -2)))
    loss.sum().backward()
    torch.testing.assert_close(z_q.grad, 2 * (z_q - z_e).detach())
    torch.testing.assert_close(z_e.grad, 0.25 * 2 * (z_e - z_q).detach())


def test_code_prior_samples_codes_and_scores_their_cells():
    book = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]])
    prior = vq.CodePrior(probs, book)
    z = prior.sample([2000]).reshape(2000, 2, 2)
    k = vq.nearest(z, book)
    assert torch.equal(book[k], z) and (k[:, 0] != 2).all()
    torch.testing.assert_close(vq.frequencies(k, 3), probs, atol=0.04, rtol=0)
    point = torch.tensor([0.9, 1.2, -0.8, 1.9])  # near code 1, then near code 2
    torch.testing.assert_close(prior.log_prob(point), torch.tensor(0.5 * 0.7).log())


def test_prior_after_training_is_the_frequency_of_the_training_codes():
    torch.manual_seed(0)
    ds = data.load("digits")
    m = VQVAE(x_dim=64, latent_dim=3, code_dim=2, codebook_size=6, hidden=(16,))
    fit(m.model, m.guide, ds, TrainConfig(epochs=1, batch_size=256, progress=False))
    k = brute_force_nearest(m.quantise(ds.x_train)[0].detach(), m.codebook.detach())
    counts = torch.stack([torch.bincount(k[:, p], minlength=6) for p in range(3)])
    torch.testing.assert_close(m.code_probs, counts / counts.sum(-1, keepdim=True))
    assert not torch.allclose(m.code_probs, torch.full((3, 6), 1 / 6))


def test_cli_trains_evaluates_and_samples(tmp_path):
    out = tmp_path / "vq"
    args = ["train", "vq-vae", "--data", "digits", "--epochs", "2", "--no-progress"]
    assert main([*args, "--batch-size", "128", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rate"] is None and 0 < metrics["test_recon_mse"] < 64
    assert math.isfinite(metrics["test_elbo"])
    assert main(["evaluate", str(out)]) == 0
    assert (out / "evaluation.json").is_file()
    assert main(["sample", str(out), "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
