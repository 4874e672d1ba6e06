"""Importance-weighted log p(x): oracles from probabilistic PCA's closed forms."""

from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from helpers import fit_module, pair_of
from ppl_vae.models.blocks.autoencoder import Autoencoder
from ppl_vae.models.cvae import CVAE
from ppl_vae.models.m2_vae import M2VAE
from ppl_vae.models.ppca import PPCA
from ppl_vae.models.vae import VAE

from ppl_vae.cli import main
from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.measure.importance import MAX_ROWS, default_chunk, iw_log_likelihood
from ppl_vae.measure.likelihood import evaluation
from ppl_vae.programs import Programs
from ppl_vae.runs.evaluate import table


def train_ppca(ds) -> PPCA:
    """Two phases of Adam (fast, then fine): the guide's mean ends within ~0.2 posterior sd."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = PPCA(ds.x_dim, latent_dim=2)
    fit_module(m, ds, TrainConfig(epochs=60, batch_size=128, lr=0.03, progress=False, device="cpu"))
    fit_module(
        m, ds, TrainConfig(epochs=40, batch_size=500, lr=0.002, progress=False, device="cpu")
    )
    return m.eval()


@pytest.fixture(scope="module")
def ppca(synthetic) -> PPCA:
    return train_ppca(synthetic)


@torch.no_grad()
def exact_log_p(m: PPCA, x: torch.Tensor) -> torch.Tensor:
    """Mean closed-form log p(x) under the model's current parameters."""
    return m.marginal().log_prob(x).mean()


@torch.no_grad()
def ppca_elbo(m: PPCA, x: torch.Tensor) -> torch.Tensor:
    """Closed-form per-example ELBO of PPCA with its diagonal Gaussian guide:
    E_q log N(x; Wz+mu, s2 I) = log N(x; W m + mu, s2 I) - tr(W^T W S) / (2 s2), minus KL."""
    q = m.posterior(x)
    mean, var = q.mean, q.variance
    s2 = m.sigma**2
    fit_term = dist.Normal(mean @ m.W.T + m.mu, s2.sqrt()).to_event(1).log_prob(x)
    trace = (m.W.pow(2).sum(0) * var).sum(-1)
    kl = torch.distributions.kl_divergence(q, m.prior().expand(q.batch_shape))
    return fit_term - trace / (2 * s2) - kl


def test_k1_is_the_elbo_in_expectation(synthetic):
    """With K=1 the estimate is one draw of log p(x,z) - log q(z|x): its mean over 200 seeds
    matches the closed-form ELBO of an untrained PPCA (a large gap to log p(x)) within 4 SE."""
    m = PPCA(synthetic.x_dim, latent_dim=2).eval()
    x = synthetic.x_test[:100]
    elbo = float(ppca_elbo(m, x).mean())
    log_p = float(exact_log_p(m, x))
    assert log_p - elbo > 1.0  # the oracle can tell the ELBO from log p(x)
    runs = torch.tensor(
        [float(iw_log_likelihood(pair_of(m), x, None, 1, seed=s).mean()) for s in range(200)]
    )
    se = float(runs.std() / math.sqrt(len(runs)))
    assert se < 0.1
    assert abs(float(runs.mean()) - elbo) < 4 * se + 1e-3


def test_estimate_grows_with_k_and_stays_below_log_p(synthetic):
    """E[log p_K] increases with K (Burda et al. 2016) and is bounded by the exact log p(x)."""
    m = PPCA(synthetic.x_dim, latent_dim=2).eval()
    x = synthetic.x_test[:50]
    log_p = float(exact_log_p(m, x))
    means, ses = [], []
    for k in (1, 10, 100):
        est = torch.stack(
            [iw_log_likelihood(pair_of(m), x, None, k, seed=s).mean() for s in range(8)]
        )
        means.append(float(est.mean()))
        ses.append(float(est.std() / math.sqrt(len(est))))
    for (a, sa), (b, sb) in zip(zip(means, ses), zip(means[1:], ses[1:])):
        assert b - a > 3 * math.hypot(sa, sb)
    assert means[-1] < log_p + 3 * ses[-1]


def test_converges_to_the_closed_form_marginal(ppca, synthetic):
    """On a trained PPCA, K=2000 matches PPCA.marginal().log_prob under the CURRENT
    parameters within 0.05 nats per example."""
    x = synthetic.x_test
    exact = float(exact_log_p(ppca, x))
    est = float(iw_log_likelihood(pair_of(ppca), x, None, 2000, seed=1).mean())
    assert abs(est - exact) < 0.05
    assert float(ppca_elbo(ppca, x).mean()) < exact


def test_chunking_does_not_change_the_estimate(digits):
    """Particles are drawn chunk by chunk from one seeded stream: chunks of a multiple of 16
    normals reproduce the single-chunk estimate to float precision; other chunkings and
    example batchings agree within Monte Carlo noise."""
    m = VAE(digits.x_dim, latent_dim=2, hidden=(32,)).eval()
    x = digits.x_test[:20]  # 20 examples x 2 latents = 40 normals per particle
    whole = iw_log_likelihood(pair_of(m), x, None, 96, chunk_size=96, batch_size=20, seed=3)
    for chunk in (2, 8, 32):  # 80, 320, 1280 normals per chunk
        part = iw_log_likelihood(pair_of(m), x, None, 96, chunk_size=chunk, batch_size=20, seed=3)
        torch.testing.assert_close(part, whole, atol=1e-4, rtol=0)
    other = iw_log_likelihood(pair_of(m), x, None, 96, chunk_size=5, batch_size=7, seed=3)
    assert not torch.allclose(other, whole)  # different draws ...
    assert abs(float(other.mean() - whole.mean())) < 0.5  # ... the same estimate
    assert default_chunk(5000, 100) * 100 <= MAX_ROWS  # bounded work per chunk


class PointMass(Autoencoder):
    """A Delta guide: its importance weights do not estimate p(x)."""

    def likelihood(self, z):
        return dist.Normal(z.sum(-1, keepdim=True).expand(*z.shape[:-1], self.x_dim), 1.0).to_event(
            1
        )

    def posterior(self, x):
        return dist.Delta(x[..., : self.latent_dim]).to_event(1)


def test_bad_input_is_a_user_error(digits):
    m = VAE(digits.x_dim, latent_dim=2, hidden=(16,))
    with pytest.raises(UserError, match="importance samples"):
        iw_log_likelihood(pair_of(m), digits.x_test[:5], None, 0)
    with pytest.raises(UserError, match="Delta"):
        iw_log_likelihood(pair_of(PointMass(4, 2)), torch.randn(3, 4), None, 10)
    record = evaluation(pair_of(PointMass(4, 2)), torch.randn(3, 4), None, 10)
    assert record["test_log_likelihood"] is None and "Delta" in record["log_likelihood_note"]


class ObservesLabels(VAE):
    """A VAE whose model also scores the labels it is given (-1: hidden, masked out)."""

    def __init__(self, x_dim: int):
        super().__init__(x_dim, latent_dim=2, hidden=(8,))
        self.head = torch.nn.Linear(x_dim, 10)

    def model(self, x, y):
        pyro.module("head", self.head)
        with pyro.plate("labels", x.shape[0]), pyro.poutine.mask(mask=y >= 0):
            pyro.sample("label", dist.Categorical(logits=self.head(x)), obs=y.clamp(min=0))
        return super().model(x)

    def guide(self, x, y):
        return super().guide(x)


SCORED = [  # program, labels given, what it scores: (sites, log_likelihood_of)
    ("vae", False, ({"x": 6}, "x")),
    ("observes_labels", True, ({"label": 6, "x": 6}, "x, label")),
    ("observes_labels", "hidden", ({"label": 4, "x": 6}, "x, label")),
    ("cvae", True, ({"x": 6}, "x | y")),  # labels condition the model: log p(x | y)
    ("m2_vae", True, ({"y": 6, "x": 6}, "x, y")),  # the guide pins y to the given label
    ("m2_vae", "hidden", ({"y": 4, "x": 6}, "x, y")),  # ... where it is given (y >= 0)
]


@pytest.mark.parametrize("name, labels, expected", SCORED)
def test_the_record_says_what_its_likelihood_is_of(name, labels, expected, digits):
    """Read off the traces' observed sites (and the label sites the guide pins), not off the
    class: log p(x), log p(x, y) or log p(x | y), in the record and in the printed table."""
    x, y = digits.x_test[:6], digits.y_test[:6].clone()
    if labels == "hidden":
        y[4:] = -1
    build = {
        "vae": lambda: VAE(digits.x_dim, latent_dim=2, hidden=(8,)),
        "observes_labels": lambda: ObservesLabels(digits.x_dim),
        "cvae": lambda: CVAE(digits.x_dim, 10, latent_dim=2, hidden=(8,)),
        "m2_vae": lambda: M2VAE(digits.x_dim, 10, latent_dim=2, hidden=(8,)),
    }
    module = build[name]()
    example = (x[:2], y[:2]) if labels else (x[:2],)
    pair = Programs(module.model, module.guide, example)
    rec = evaluation(pair, x, y if labels else None, num_samples=3, batch_size=4)
    sites, of = expected
    assert rec["scored_sites"] == sites and rec["log_likelihood_of"] == of
    assert f"test log p({of}), IW K=3" in table(rec, "test")


def test_cli_evaluate_writes_the_contract(tiny_run, capsys):
    assert "Evaluation (ppl-vae evaluate)" not in (tiny_run / "report.html").read_text()
    assert main(["evaluate", str(tiny_run), "--iwae-samples", "200", "--no-progress"]) == 0
    rec = json.loads((tiny_run / "evaluation.json").read_text())
    page = (tiny_run / "report.html").read_text()  # the run's report now shows the record
    from ppl_vae.runs.report import plus_minus

    shown = plus_minus(rec["test_log_likelihood"], rec["test_log_likelihood_stderr"])
    assert "Evaluation (ppl-vae evaluate)" in page and f">{shown}<" in page
    for key in (
        "test_elbo",
        "test_log_likelihood",
        "rate",
        "distortion",
        "active_units",
        "kl_per_dim",
        "recon_mse",
        "iwae_samples",
        "split",
    ):
        assert key in rec
    # every estimate with its standard error over the test examples
    for key in ("test_elbo", "test_log_likelihood", "rate", "distortion"):
        assert 0 < rec[f"{key}_stderr"] < abs(rec[key]) / 2, key
    assert rec["elbo_draws"] > 1  # the ELBO averaged over several draws per example
    assert rec["iwae_samples"] == 200 and rec["split"] == "test"
    assert rec["log_likelihood_of"] == "x" and rec["scored_sites"] == {"x": rec["examples"]}
    assert rec["test_elbo"] < rec["test_log_likelihood"] < 0
    printed = capsys.readouterr().out
    assert "log p(x)" in printed and f" {shown}" in printed
    assert (
        main(
            ["evaluate", str(tiny_run), "--iwae-samples", "5", "--split", "train", "--no-progress"]
        )
        == 0
    )
    train = json.loads((tiny_run / "evaluation-train.json").read_text())
    assert train["split"] == "train" and train["train_elbo"] < train["train_log_likelihood"]
    assert train["train_elbo_stderr"] > 0 and train["train_log_likelihood_stderr"] > 0


def test_cli_evaluate_refuses_bad_input(tiny_run, tmp_path, capsys):
    assert main(["evaluate", str(tiny_run), "--iwae-samples", "0"]) == 2
    assert "--iwae-samples" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
