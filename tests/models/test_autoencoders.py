"""The deterministic autoencoders as Pyro programs, checked against closed forms and oracles:
the point-mass ELBO is the squared error, PCA matches scikit-learn, PPCA's ELBO matches its
exact maximum likelihood, the sparse loss is reconstruction + lambda * L1, and denoising
training helps on corrupted inputs."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch
from helpers import elbo_module, fit_module, log_prob_terms, pair_of
from ppl_vae.models.ae import AE
from ppl_vae.models.denoising_ae import DenoisingAE, corrupt
from ppl_vae.models.pca import PCA
from ppl_vae.models.ppca import PPCA, max_log_likelihood
from ppl_vae.models.sparse_ae import SparseAE
from ppl_vae.models.tanh_ae import TanhAE
from pyro import poutine
from scipy.linalg import subspace_angles
from sklearn.decomposition import PCA as SkPCA

from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.measure.metrics import evaluate
from ppl_vae.runs.compare import code_sparsity


def gaussian_const(d: int, scale: float) -> float:
    """:math:`\\tfrac{D}{2}\\log(2\\pi s^2)`, the normaliser of a fixed-scale Gaussian."""
    return 0.5 * d * math.log(2 * math.pi * scale**2)


def test_point_mass_guide_makes_the_loss_the_squared_error():
    m = AE(x_dim=64, latent_dim=3, hidden=(16,), scale=0.5)
    x = torch.rand(7, 64)
    terms = log_prob_terms(m, x)
    assert torch.equal(terms["log_q"], torch.zeros(7))  # log delta(h - f(x)) at h = f(x)
    assert torch.equal(terms["log_prior"], torch.zeros(7))  # masked, not scaled by 0
    sq = (x - m.decoder(m.encoder(x))).pow(2).sum(-1)
    hand = (sq / (2 * 0.25) + gaussian_const(64, 0.5)).sum()
    assert float(elbo_module(m)(x).detach()) == pytest.approx(float(hand.detach()), rel=1e-5)
    # The gradient reaches the encoder through the Delta's sample.
    elbo_module(m)(x).backward()
    assert all(p.grad.abs().sum() > 0 for p in m.encoder.parameters())


def test_tanh_ae_is_the_tied_lecture_formula_and_learns(digits):
    m = TanhAE(x_dim=64, latent_dim=4)
    x = digits.x_test[:5]
    w, b, c = m.W, m.b, m.c
    expected = torch.tanh(torch.tanh(x @ w + b) @ w.T + c)
    assert torch.allclose(m.reconstruct(x), expected)
    assert m.W_dec is None and sum(p.numel() for p in m.parameters()) == 64 * 4 + 4 + 64
    fit_module(m, digits, TrainConfig(epochs=10, batch_size=64, lr=0.03, progress=False))
    mse = evaluate(pair_of(m), digits.x_test)["recon_mse"]
    mean_only = float((digits.x_test - digits.x_train.mean(0)).pow(2).sum(1).mean())
    assert mse < 0.7 * mean_only  # 4 tanh units explain over 30% of the variance


def test_pca_matches_sklearn_error_and_subspace(digits):
    d = 4  # eigenvalues 0.379 vs 0.272 around the cut: a clear subspace to find
    m = PCA(x_dim=64, latent_dim=d)
    # Full-batch Adam: deterministic gradients, so the subspace converges, not just the error.
    cfg = TrainConfig(epochs=200, batch_size=digits.x_train.shape[0], lr=0.05, progress=False)
    fit_module(m, digits, cfg)
    sk = SkPCA(n_components=d).fit(digits.x_train.numpy())
    xt = digits.x_test.numpy()
    sk_mse = float(((sk.inverse_transform(sk.transform(xt)) - xt) ** 2).sum(1).mean())
    mse = evaluate(pair_of(m), digits.x_test)["recon_mse"]
    assert mse == pytest.approx(sk_mse, rel=0.01)
    angles = np.degrees(subspace_angles(m.W.detach().numpy(), sk.components_.T))
    assert angles.max() < 1.0
    # The learned centring agrees with the data mean outside span(W), all the loss sees.
    q = m.components().T
    resid = (torch.eye(64) - q @ q.T) @ (m.mean.detach() - digits.x_train.mean(0))
    assert float(resid.norm()) < 0.05
    assert torch.allclose(m.W.T @ m.W, torch.eye(d), atol=0.05)  # orthonormal at the optimum


@pytest.mark.parametrize("seed", [0, 1])
def test_ppca_elbo_reaches_the_closed_form_maximum_likelihood(synthetic, seed):
    x = synthetic.x_train
    pyro.set_rng_seed(seed)
    m = PPCA(x_dim=synthetic.x_dim, latent_dim=2)  # fit starts it at the data's scale
    # Cosine-annealed steps settle the Monte Carlo noise of the gradient (the likelihood is
    # flat in W's scale near the optimum). Seeds 0-5 land 0.2-0.4% from the maximum.
    cfg = TrainConfig(
        epochs=50, lr=0.1, batch_size=64, elbo="meanfield", lr_schedule="cosine", seed=seed
    )
    cfg = cfg.replace(progress=False)
    fit_module(m, synthetic, cfg)
    best = max_log_likelihood(x, 2)
    elbo = evaluate(pair_of(m), x)["elbo"]
    assert abs(elbo - best) < 0.01 * abs(best)
    assert elbo < best + 0.02  # a lower bound on log p(x; theta) <= max log-likelihood
    # Importance-weighted estimate, K draws: log (1/K) sum_k p(x, z_k) / q(z_k | x).
    k = 64
    with torch.no_grad():
        draws = [log_prob_terms(m, x) for _ in range(k)]
        log_w = torch.stack([t["log_lik"] + t["log_prior"] - t["log_q"] for t in draws])
        iw = float((torch.logsumexp(log_w, 0) - math.log(k)).mean())
        same_draws_elbo = float(log_w.mean())
        exact = float(m.marginal().log_prob(x).mean())
    assert same_draws_elbo <= iw <= best + 0.02
    # Closer to the optimum than the ELBO of the same draws (the guide is nearly exact here,
    # so the gain is small: compare on shared draws, not against another noisy estimate).
    assert abs(best - iw) < abs(best - same_draws_elbo)
    assert iw == pytest.approx(exact, abs=0.02)  # the estimator recovers the exact marginal


def test_sparse_loss_is_reconstruction_plus_lambda_l1():
    lam, d = 0.7, 5
    m = SparseAE(x_dim=64, latent_dim=d, hidden=(16,), l1=lam, scale=0.3)
    x = torch.rand(9, 64)
    h = m.encoder(x)
    recon = (x - m.decoder(h)).pow(2).sum(-1) / (2 * 0.3**2) + gaussian_const(64, 0.3)
    laplace_const = -d * math.log(lam / 2)  # -log of the Laplace normaliser, per example
    hand = (recon + lam * h.abs().sum(-1) + laplace_const).sum()
    assert float(elbo_module(m)(x).detach()) == pytest.approx(float(hand.detach()), rel=1e-5)
    terms = log_prob_terms(m, x)
    assert torch.allclose(-terms["log_prior"], lam * h.abs().sum(-1) + laplace_const, atol=1e-5)


def test_code_sparsity_grows_with_lambda(digits):
    """Sparsity = fraction of test code entries with |h| < 1e-2 (ppl_vae.runs.compare)."""
    cfg = TrainConfig(epochs=6, batch_size=64, lr=3e-3, progress=False)
    sparsity = {}
    for lam in (0.01, 1.0):
        m = SparseAE(x_dim=64, latent_dim=16, hidden=(64,), l1=lam)
        fit_module(m, digits, cfg)
        with torch.no_grad():
            sparsity[lam] = code_sparsity(m.eval().encode(digits.x_test))
    assert sparsity[0.01] < 0.2 and sparsity[1.0] > 0.5
    assert sparsity[1.0] > sparsity[0.01] + 0.4


def test_denoising_guide_corrupts_only_while_training():
    m = DenoisingAE(x_dim=64, latent_dim=2, hidden=(8,), noise="gaussian", noise_level=0.5)
    x = torch.rand(6, 64)
    m.train()
    guide = poutine.trace(m.guide).get_trace(x)
    model = poutine.trace(poutine.replay(m.model, trace=guide)).get_trace(x)
    assert not torch.allclose(guide.nodes["z"]["value"], m.code(x))  # encoded a noisy x
    assert torch.equal(model.nodes["x"]["value"], x)  # the model scores the clean x
    m.eval()
    assert torch.equal(m.guide_input(x), x)
    assert torch.equal(poutine.trace(m.guide).get_trace(x).nodes["z"]["value"], m.code(x))


@pytest.mark.parametrize("noise,level", [("mask", 0.5), ("gaussian", 0.5)])
def test_denoising_beats_plain_ae_on_corrupted_inputs(digits, noise, level):
    cfg = TrainConfig(epochs=8, batch_size=64, lr=3e-3, progress=False)
    noisy = corrupt(digits.x_test, noise, level, torch.Generator().manual_seed(1))
    err = {}
    for name, m in (
        ("ae", AE(x_dim=64, latent_dim=8, hidden=(64,))),
        ("dae", DenoisingAE(x_dim=64, latent_dim=8, hidden=(64,), noise=noise, noise_level=level)),
    ):
        torch.manual_seed(0)
        fit_module(m, digits, cfg)
        with torch.no_grad():
            err[name] = float((m.eval().reconstruct(noisy) - digits.x_test).pow(2).sum(1).mean())
    assert err["dae"] < 0.9 * err["ae"], err


@pytest.mark.parametrize(
    "build",
    [
        lambda: DenoisingAE(x_dim=4, noise="salt"),
        lambda: DenoisingAE(x_dim=4, noise="mask", noise_level=1.0),
        lambda: SparseAE(x_dim=4, l1=0),
        lambda: AE(x_dim=4, scale=-1),
        lambda: PCA(x_dim=4, latent_dim=5),
    ],
)
def test_bad_arguments_are_user_errors(build):
    with pytest.raises(UserError):
        build()


# -- each model reaches its oracle with its own defaults (what `ppl-vae train` runs) -------


def defaults_run(model: str, data: str, seed: int, **model_args):
    """``ppl-vae train MODEL --data DATA --seed S``: no training flag given, so the model's
    recommended ``train_defaults`` apply (as the CLI does through ``typed``)."""
    from ppl_vae.runs.config import RunConfig
    from ppl_vae.runs.train import train_run

    cfg = RunConfig(
        model=model,
        data=data,
        model_args=model_args,
        train=TrainConfig(seed=seed, progress=False, device="cpu"),
        typed=frozenset({"seed", "device"}),
    )
    return train_run(cfg)


def public_rows(name: str, seed: int) -> np.ndarray:
    """Every row of a public table, in an order drawn from ``seed`` (a split of the test's
    own): scikit-learn's bundled tables -- wine and breast_cancer standardised, as
    scikit-learn's own PCA examples take them (their columns run from 1e-3 to 1e3 units) --
    or mnist-5k's 5000 digits through the suite's loader."""
    from sklearn import datasets

    from ppl_vae import data

    if name == "mnist-5k":
        ds = data.load("mnist-5k")
        x = torch.cat([ds.x_train, ds.x_test]).numpy()
    else:
        x = getattr(datasets, f"load_{name}")().data.astype(np.float64)
        x = x / 16 if name == "digits" else x
        if name in ("wine", "breast_cancer"):
            x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32)[np.random.default_rng(seed).permutation(len(x))]


def as_npz(tmp_path, x: np.ndarray) -> str:
    """The rows as a ``--data`` file: the first fifth held out as the test set."""
    n_test = len(x) // 5
    np.savez(tmp_path / "mine.npz", x_train=x[n_test:], x_test=x[:n_test])
    return str(tmp_path / "mine.npz")


#: (data, latent dimension, training seed): public tables, splits drawn from the seed.
PCA_CASES = {
    "suite-digits": ("digits", 8, 0),  # `ppl-vae train pca --latent-dim 8`, the suite's split
    "digits": ("digits", 8, 41),
    "iris": ("iris", 2, 42),
    "wine": ("wine", 8, 43),
    "breast_cancer": ("breast_cancer", 8, 44),
    "diabetes": ("diabetes", 5, 45),
    "mnist-5k": ("mnist-5k", 8, 46),
}


@pytest.mark.parametrize("case", list(PCA_CASES))
def test_pca_with_its_defaults_matches_sklearn(tmp_path, case):
    """`ppl-vae train pca --latent-dim d --data DATA`, no training flag: the test error
    within 0.5% of scikit-learn's PCA fitted to the same training rows, and training
    stopped because the gradient vanished, not because the epochs ran out."""
    from ppl_vae import data

    name, latent, seed = PCA_CASES[case]
    source = name if case == "suite-digits" else as_npz(tmp_path, public_rows(name, seed))
    job = defaults_run("pca", source, seed=seed, latent_dim=latent)
    ds = data.load(source)
    assert job.config.train.batch_size >= ds.x_train.shape[0]  # full batch by default
    sk = SkPCA(n_components=latent).fit(ds.x_train.numpy())
    xt = ds.x_test.numpy()
    sk_mse = float(((sk.inverse_transform(sk.transform(xt)) - xt) ** 2).sum(1).mean())
    assert job.metrics["test_recon_mse"] == pytest.approx(sk_mse, rel=0.005)
    assert job.metrics["stopped"] == "converged"
    assert job.metrics["history"][-1]["grad_norm"] <= job.config.train.grad_tolerance


def ppca_rows(seed: int, n: int, width: int, rank: int, noise: float) -> np.ndarray:
    """Draws of a pPCA of its own (not ``data.load("synthetic")``): columns of decreasing
    length, a mean away from 0, isotropic noise."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(width, rank)) * np.linspace(2.5, 1.0, rank)
    z, eps = rng.normal(size=(n, rank)), rng.normal(size=(n, width))
    return (z @ w.T + rng.normal(size=width) + noise * eps).astype(np.float32)


#: (data, latent dimension or None for the default, training seed). Sizes, seeds and splits
#: the defaults were not tuned on: public tables (:func:`public_rows`) and pPCA draws.
PPCA_CASES = {
    "suite-synthetic": ("synthetic", 3, 1),
    "ppca-700x14-rank3": (lambda: ppca_rows(31, 900, 14, 3, 0.5), 3, 5),
    "ppca-1200x18-rank4": (lambda: ppca_rows(32, 1500, 18, 4, 0.7), 4, 6),
    "digits": (lambda: public_rows("digits", 33), None, 7),
    "iris": (lambda: public_rows("iris", 51), 2, 51),
    "wine": (lambda: public_rows("wine", 52), 3, 52),
    "breast_cancer": (lambda: public_rows("breast_cancer", 53), 5, 53),
    "diabetes": (lambda: public_rows("diabetes", 54), 5, 54),
}


@pytest.mark.parametrize("case", list(PPCA_CASES))
def test_ppca_with_its_defaults_reaches_the_maximum_likelihood(tmp_path, case):
    """`ppl-vae train ppca [--latent-dim d] --data DATA --seed S`, no training flag: the
    trained model's exact log-likelihood within 0.02 nats of the closed-form maximum
    likelihood's (Tipping & Bishop, fitted to the same training rows), on the held-out rows
    and on the training rows."""
    from ppl_vae.models.ppca import maximum_likelihood

    from ppl_vae import data

    source, latent, seed = PPCA_CASES[case]
    if callable(source):
        source = as_npz(tmp_path, source())
    args = {} if latent is None else {"latent_dim": latent}
    job = defaults_run("ppca", source, seed=seed, **args)
    ds = data.load(source, seed=seed)  # the split the run trained on
    m = job.pair.owners[0]
    latent = m.latent_dim
    mu, w, s2 = maximum_likelihood(ds.x_train, latent)
    best = torch.distributions.MultivariateNormal(mu, w @ w.T + s2 * torch.eye(ds.x_dim).double())
    with torch.no_grad():
        mm = m.marginal()
        trained = torch.distributions.MultivariateNormal(
            mm.loc.double(), mm.covariance_matrix.double()
        )
        gaps = [
            float((best.log_prob(x) - trained.log_prob(x)).mean())
            for x in (ds.x_test.double(), ds.x_train.double())
        ]
    assert abs(gaps[0]) < 0.02 and -1e-6 < gaps[1] < 0.02, gaps
    assert job.config.train.elbo == "meanfield"  # the model's recommendation applied
