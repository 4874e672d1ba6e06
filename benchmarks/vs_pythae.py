"""Every model the suite shares with pythae, trained on both sides alike, scored by one evaluator.

Setting (issues 32 and 30): mnist-5k (4000 train / 1000 test rows), dynamically binarised --
each side draws fresh binary training images every epoch, and both are scored on the suite's
one fixed binary draw of the test set (``test_binarize_seed``); a 784-400-16 MLP encoder and
16-400-784 decoder, Adam at 1e-3, batches of 100, the same epochs. One row is one
:class:`Row`: the suite's ``ppl-vae train MODEL --objective OBJ`` arguments, pythae 0.1.2's
model class and config, and the loader that turns pythae's trained ``state_dict`` into a Pyro
program pair expressing pythae's model (:class:`PythaeProgram`: its encoder and decoder, its
planar/radial flows (``VAE_LinNF``), its MADE-based IAF (``VAE_IAF``), its VampPrior whose
pseudo-inputs are ``hardtanh(Linear(one-hot))`` (``VAMP``); for the deterministic ones a
point-mass guide). Both sides are then scored by the *same* evaluator: the suite's
importance-weighted log p(x) with K samples (:func:`ppl_vae.measure.importance.iw_log_likelihood`,
K = 1000 by default) with its standard error, and the rate and distortion of
:func:`ppl_vae.measure.metrics.evaluate`; the deterministic autoencoders (``AE``, ``WAE_MMD``
with its deterministic encoder) by the squared reconstruction error per digit, summed over
pixels (:func:`ppl_vae.traces.reconstruct`). Differences carry their paired standard error over
the test digits, and a verdict: better or worse beyond two paired SEs, else a tie.

pythae is never a dependency of ppl-vae: it runs in a virtual environment of its own
(``--pythae-python``), this script calling itself there with ``--pythae-side``; the two sides
exchange data and weights as ``.npz`` and safetensors files. ``--make-fixture PATH`` (pythae's
side) writes the tiny fixture the loader tests read: per loader, pythae's random weights, a
batch, base draws and pythae's own flow outputs and log-densities, so the tests check the
loaders without pythae installed.

Run (the issue's budget: every row, 50 epochs; on two shared CPU cores a few minutes a row,
MIWAE's 50 particles about half an hour)::

    .venv/bin/python benchmarks/vs_pythae.py --pythae-python /work/wt/pythae-venv/bin/python \\
        --epochs 50 --out /tmp/vs_pythae

The table in ``benchmarks/README.md`` is ``--epochs 10`` (the time one session had); each run
adds its rows to ``--out``'s ``vs_pythae-epN.json`` and ``.md``, so rows and seeds can be run
one at a time (``--rows vae,iwae --seeds 1``).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.distributions import Transform, constraints

LATENT, HIDDEN, BATCH, LR = 16, 400, 100, 1e-3
LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class Row:
    """One shared model: the suite's run and pythae's, and the program pythae's weights load
    into. ``program``: ``gauss`` (N(0, I) prior, Gaussian guide), ``planar``/``radial``
    (pythae's global flows after the Gaussian guide), ``iaf`` (pythae's MADE IAF), ``vamp``
    (pythae's VampPrior) or ``point`` (a point-mass guide, Gaussian pixels of scale 1)."""

    key: str  # --rows
    name: str
    model: str
    train: dict = field(default_factory=dict)
    model_args: dict = field(default_factory=dict)
    pythae: str = "VAE"
    config: dict = field(default_factory=dict)
    program: str = "gauss"

    @property
    def deterministic(self) -> bool:
        return self.program == "point"

    @property
    def bernoulli(self) -> bool:
        return not self.deterministic


BCE = {"reconstruction_loss": "bce"}
IW10 = {"num_particles": 10}
#: pythae's IMQ kernel (scales 0.1..10, C = 2 d), as the suite's; its WAE reconstruction is
#: the summed squared error, so a scale of 0.5 makes it the suite's -log N(x; g(z), 1) + const.
MMD = {"kernel_choice": "imq", "kernel_bandwidth": 1.0}
ROWS = [
    Row("vae", "VAE", "vae", config=BCE),
    Row(
        "beta-vae",
        "BetaVAE (beta 4)",
        "vae",
        {"beta": 4.0},
        pythae="BetaVAE",
        config={**BCE, "beta": 4.0},
    ),
    Row(
        "linnf-planar",
        "VAE_LinNF (2 planar)",
        "nf-vae",
        model_args={"flow": "planar", "flow_length": 2},
        pythae="VAE_LinNF",
        config={**BCE, "flows": ["Planar", "Planar"]},
        program="planar",
    ),
    Row(
        "linnf-radial",
        "VAE_LinNF (2 radial)",
        "nf-vae",
        model_args={"flow": "radial", "flow_length": 2},
        pythae="VAE_LinNF",
        config={**BCE, "flows": ["Radial", "Radial"]},
        program="radial",
    ),
    Row(
        "iaf",
        "VAE_IAF (2 MADE, 2x128)",
        "iaf-vae",
        model_args={"flows": 2, "flow_hidden": 128},
        pythae="VAE_IAF",
        config={**BCE, "n_made_blocks": 2, "n_hidden_in_made": 2, "hidden_size": 128},
        program="iaf",
    ),
    Row(
        "vamp",
        "VAMP (50 pseudo-inputs)",
        "vamp-vae",
        model_args={"num_pseudo": 50},
        pythae="VAMP",
        config={**BCE, "number_components": 50},
        program="vamp",
    ),
    Row(
        "iwae",
        "IWAE (K 10)",
        "vae",
        {"objective": "iwae", **IW10},
        pythae="IWAE",
        config={**BCE, "number_samples": 10},
    ),
    Row(
        "miwae",
        "MIWAE (M 5, K 10)",
        "vae",
        {"objective": "miwae", "miwae_groups": 5, **IW10},
        pythae="MIWAE",
        config={**BCE, "number_samples": 10, "number_gradient_estimates": 5},
    ),
    Row(
        "ciwae",
        "CIWAE (beta 0.5, K 10)",
        "vae",
        {"objective": "ciwae", "ciwae_beta": 0.5, **IW10},
        pythae="CIWAE",
        config={**BCE, "number_samples": 10, "beta": 0.5},
    ),
    Row(
        "tcvae",
        "BetaTCVAE (beta 6, MWS)",
        "vae",
        {"objective": "tcvae", "beta": 6.0},
        pythae="BetaTCVAE",
        config={**BCE, "alpha": 1.0, "beta": 6.0, "gamma": 1.0, "use_mss": False},
    ),
    Row(
        "infovae",
        "INFOVAE_MMD (alpha 0, lambda 10)",
        "vae",
        {"objective": "infovae", "info_alpha": 0.0, "mmd_lambda": 10.0},
        pythae="INFOVAE_MMD",
        config={**BCE, **MMD, "alpha": 0.0, "lbd": 10.0},
    ),
    Row(
        "wae",
        "WAE_MMD (lambda 10)",
        "ae",
        {"objective": "wae", "mmd_lambda": 10.0},
        pythae="WAE_MMD",
        config={**MMD, "reg_weight": 10.0, "reconstruction_loss_scale": 0.5},
        program="point",
    ),
    Row("ae", "AE", "ae", pythae="AE", program="point"),
    Row(  # pythae: |KL_i - C| per example, C rising per epoch; the suite: |mean KL - C|
        "capacity",
        "DisentangledBetaVAE (gamma 10, C 20)",
        "vae",
        {"objective": "capacity", "gamma": 10.0, "capacity_max": 20.0, "capacity_steps": 200},
        pythae="DisentangledBetaVAE",
        config={**BCE, "beta": 10.0, "C": 20.0, "warmup_epoch": 4},
    ),
]
ROW_KEYS = {r.key: r for r in ROWS}


# -- the networks both sides share ------------------------------------------------------


class Encoder(nn.Module):
    """784-400-16: mu and log_var heads (pythae's convention)."""

    def __init__(self, x_dim: int = 784, latent: int = LATENT, hidden: int = HIDDEN):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU())
        self.mu, self.log_var = nn.Linear(hidden, latent), nn.Linear(hidden, latent)

    def params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x.reshape(x.shape[0], -1))
        return self.mu(h), self.log_var(h)


class Decoder(nn.Module):
    """16-400-784: Bernoulli logits, or Gaussian means (the deterministic rows)."""

    def __init__(self, x_dim: int = 784, latent: int = LATENT, hidden: int = HIDDEN):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, x_dim))

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


class Wrapped(nn.Module):
    """``.net``: the names pythae's ``BaseEncoder``/``BaseDecoder`` wrappers give (below)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net


# -- pythae's flows and prior, ported (state_dict names as pythae's) ---------------------


class PlanarFlow(nn.Module):
    """pythae's ``PlanarFlow``: f(z) = z + u tanh(w.z + b), log|det| = log(|1 + tanh'(w.z +
    b) w.u| + 1e-4) -- no invertibility constraint on u (unlike Pyro's)."""

    def __init__(self, d: int):
        super().__init__()
        self.w, self.u, self.b = (nn.Parameter(torch.zeros(*s)) for s in ((1, d), (1, d), (1,)))

    def step(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lin = z @ self.w.T + self.b
        wu = (self.w * self.u).sum()
        log_det = torch.log((1 + (1 - torch.tanh(lin) ** 2) * wu).abs() + 1e-4)
        return z + self.u * torch.tanh(lin), log_det.squeeze(-1)


class RadialFlow(nn.Module):
    """pythae's ``RadialFlow``: alpha = exp(log_alpha), beta = -alpha + softplus(beta')."""

    def __init__(self, d: int):
        super().__init__()
        self.d = d
        self.x0, self.log_alpha, self.beta = (
            nn.Parameter(torch.zeros(*s)) for s in ((1, d), (1,), (1,))
        )

    def step(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        diff = z - self.x0
        alpha = self.log_alpha.exp()
        beta = -alpha + torch.log(1 + self.beta.exp())
        r = diff.norm(dim=-1, keepdim=True)
        h = 1 / (alpha + r)
        log_det = (self.d - 1) * torch.log(1 + beta * h) + torch.log(
            1 + beta * h - beta * r / (alpha + r) ** 2
        )
        return z + beta * h * diff, log_det.squeeze(-1)


class MaskedLinear(nn.Linear):
    def __init__(self, n_in: int, n_out: int):
        super().__init__(n_in, n_out)
        self.register_buffer("mask", torch.ones(n_out, n_in))  # pythae's, loaded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.mask * self.weight, self.bias)


class MADE(nn.Module):
    """pythae's ``MADE`` (sequential degrees): ``n_hidden`` masked ReLU layers, then
    (mu, s); its masks come with the weights."""

    def __init__(self, d: int, hidden: int, n_hidden: int):
        super().__init__()
        sizes = [d] + [hidden] * n_hidden
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [MaskedLinear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers, MaskedLinear(hidden, 2 * d))
        self.d = d

    def step(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(z)
        mu, s = out[..., : self.d], out[..., self.d :]
        return z * s.exp() + mu, s.sum(-1)


class IAF(nn.Module):
    """pythae's ``IAF.inverse`` (its sampling direction in ``VAE_IAF``): for each MADE from
    the last, flip the coordinates, then z <- z exp(s(z)) + mu(z)."""

    def __init__(self, d: int, blocks: int, hidden: int, n_hidden: int):
        super().__init__()
        self.net = nn.ModuleList(MADE(d, hidden, n_hidden) for _ in range(blocks))

    def step(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = z.new_zeros(z.shape[:-1])
        for made in self.net[::-1]:
            z, s = made.step(z.flip(-1))
            log_det = log_det + s
        return z, log_det


class Step(Transform):
    """A pythae flow step as a torch ``Transform`` (it scores its own draws, from the cache,
    which is all an importance-weighted estimate asks of a guide)."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, flow: nn.Module):
        super().__init__(cache_size=1)
        self.flow = flow

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        return self.flow.step(z)[0]

    def log_abs_det_jacobian(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.flow.step(z)[1]


def pythae_nets(row: Row, x_dim: int = 784, latent: int = LATENT, hidden: int = HIDDEN):
    """A module whose ``state_dict`` names and shapes are those of pythae's model for ``row``."""
    nets = nn.Module()
    nets.encoder = Wrapped(Encoder(x_dim, latent, hidden))
    nets.decoder = Wrapped(Decoder(x_dim, latent, hidden))
    if row.program in ("planar", "radial"):
        kind = PlanarFlow if row.program == "planar" else RadialFlow
        nets.net = nn.ModuleList(kind(latent) for _ in row.config["flows"])
    elif row.program == "iaf":
        c = row.config
        nets.iaf_flow = IAF(latent, c["n_made_blocks"], c["hidden_size"], c["n_hidden_in_made"])
    elif row.program == "vamp":
        nets.pseudo_inputs = nn.Sequential(
            nn.Linear(row.config["number_components"], x_dim), nn.Hardtanh(0.0, 1.0)
        )
    return nets


try:
    from ppl_vae.models.blocks.autoencoder import Autoencoder
except ImportError:  # pythae's environment, where ppl-vae is not installed
    Autoencoder = nn.Module


class PythaeProgram(Autoencoder):
    """pythae's trained model for ``row`` as a Pyro program pair (the suite's
    ``Autoencoder``: ``model`` draws z from :meth:`prior`, x from :meth:`likelihood`; the
    guide draws z from :meth:`posterior`)."""

    def __init__(self, row: Row, state: dict | None = None, **dims):
        x_dim, latent = dims.get("x_dim", 784), dims.get("latent", LATENT)
        super().__init__(x_dim, latent)
        self.row, self.has_prior = row, not row.deterministic
        self.p = pythae_nets(row, **dims)
        if state is not None:
            self.p.load_state_dict(state, strict=True)

    def posterior(self, x: torch.Tensor):
        import pyro.distributions as dist

        mu, log_var = self.p.encoder.net.params(x)
        if self.row.deterministic:
            return dist.Delta(mu).to_event(1)
        base = dist.Normal(mu, (0.5 * log_var).exp()).to_event(1)
        flows = {"planar": "net", "radial": "net", "iaf": "iaf_flow"}.get(self.row.program)
        if flows is None:
            return base
        steps = [Step(self.p.iaf_flow)] if flows == "iaf_flow" else [Step(f) for f in self.p.net]
        return dist.TransformedDistribution(base, steps)

    def prior(self):
        import pyro.distributions as dist

        if self.row.program != "vamp":
            return super().prior()
        eye = torch.eye(self.p.pseudo_inputs[0].in_features, device=self._zero.device)
        mu, log_var = self.p.encoder.net.params(self.p.pseudo_inputs(eye))
        mixing = dist.Categorical(logits=torch.zeros_like(mu[:, 0]))
        return dist.MixtureSameFamily(mixing, dist.Normal(mu, (0.5 * log_var).exp()).to_event(1))

    def likelihood(self, z: torch.Tensor):
        import pyro.distributions as dist

        out = self.p.decoder.net.logits(z)
        if self.row.bernoulli:
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        return dist.Normal(out, torch.ones_like(out)).to_event(1)


# -- the pythae side (runs in pythae's own environment) ----------------------------------


def pythae_model(row: Row, x_dim: int = 784, latent: int = LATENT, hidden: int = HIDDEN):
    """pythae's model for ``row`` with the shared networks (runs where pythae is)."""
    import pythae.models as pm
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class PEncoder(BaseEncoder):
        def __init__(self):
            BaseEncoder.__init__(self)
            self.net = Encoder(x_dim, latent, hidden)

        def forward(self, x):
            mu, log_var = self.net.params(x)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class PDecoder(BaseDecoder):
        def __init__(self):
            BaseDecoder.__init__(self)
            self.net = Decoder(x_dim, latent, hidden)

        def forward(self, z):
            out = self.net.logits(z)
            return ModelOutput(reconstruction=torch.sigmoid(out) if row.bernoulli else out)

    name = row.pythae
    config_cls = getattr(pm, f"{name}Config", None) or getattr(pm, f"{name}_Config")
    config = config_cls(input_dim=(x_dim,), latent_dim=latent, **row.config)
    return getattr(pm, name)(config, encoder=PEncoder(), decoder=PDecoder())


def pythae_side(args: argparse.Namespace) -> None:
    from pythae.data.datasets import DatasetOutput
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from safetensors.torch import save_file

    class Dynamic(torch.utils.data.Dataset):
        """Grey images, one fresh Bernoulli draw each time a row is read (each epoch)."""

        def __init__(self, x: torch.Tensor, seed: int):
            self.x, self.g = x, torch.Generator().manual_seed(seed)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            row = self.x[i]
            return DatasetOutput(data=(torch.rand(row.shape, generator=self.g) < row).float())

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    row = ROW_KEYS[args.row]
    x_train = torch.from_numpy(np.load(args.data)["x_train"]).float()
    model = pythae_model(row)
    config = BaseTrainerConfig(
        output_dir=str(Path(args.out).parent / f"pythae-{Path(args.out).stem}"),
        learning_rate=LR,
        per_device_train_batch_size=BATCH,
        num_epochs=args.epochs,
        optimizer_cls="Adam",
        seed=args.seed,
        no_cuda=True,
    )
    trainer = BaseTrainer(model, Dynamic(x_train, args.seed), training_config=config)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)
    Path(args.out).with_suffix(".json").write_text(json.dumps({"seconds": seconds}))


#: The loaders' fixture: tiny networks, and smaller flows and mixtures than the rows'.
TINY = {"x_dim": 12, "latent": 3, "hidden": 7}
FIXTURE_KEYS = ("vae", "linnf-planar", "linnf-radial", "iaf", "vamp", "ae")


def tiny_row(key: str) -> Row:
    row, config = ROW_KEYS[key], {}
    if row.program == "iaf":
        config = {"n_made_blocks": 2, "n_hidden_in_made": 2, "hidden_size": 6}
    elif row.program == "vamp":
        config = {"number_components": 5}
    return Row(key, row.name, row.model, pythae=row.pythae, program=row.program,
               config={**row.config, **config})  # fmt: skip


def state_and(model: nn.Module, **tensors: torch.Tensor) -> dict:
    return tensors | {f"state.{k}": v for k, v in model.state_dict().items()}


def make_fixture(path: str) -> None:
    """pythae's own log q(z_K|x) and log p(z_K) (its formulas drop the -d/2 log 2 pi) for
    random weights of each loader, tiny dims, saved for the tests (runs where pythae is)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    out = {}
    for key in FIXTURE_KEYS:
        row = tiny_row(key)
        model = pythae_model(row, **TINY).eval()
        with torch.no_grad():
            for p in model.parameters():  # away from pythae's init, so every weight matters
                p.add_(0.3 * torch.randn_like(p))
            x = (torch.rand(6, 12) < 0.4).float()
            if row.deterministic:  # pythae's own reconstruction
                tensors = state_and(model, x=x, recon=model({"data": x}).recon_x)
            else:
                tensors = state_and(model, x=x, **pythae_densities(model, row, x))
        out |= {f"{key}/{k}": v.clone().contiguous() for k, v in tensors.items()}
    save_file(out, path)


def pythae_densities(model: nn.Module, row: Row, x: torch.Tensor) -> dict:
    """pythae's own z_K, log q(z_K|x) and log p(z_K) at a draw z0 (its forward's code)."""
    mu, log_var = model.encoder.net.params(x)
    z0 = mu + (0.5 * log_var).exp() * torch.randn_like(mu)
    z, log_det = z0, torch.zeros(x.shape[0])
    for layer in getattr(model, "net", []):  # VAE_LinNF's forward
        o = layer(z)
        z, log_det = o.out, log_det + o.log_abs_det_jac
    if row.program == "iaf":  # VAE_IAF's forward: the flow's inverse
        o = model.iaf_flow.inverse(z0)
        z, log_det = o.out, o.log_abs_det_jac
    log_q = (-0.5 * (log_var + (z0 - mu) ** 2 / log_var.exp())).sum(1) - log_det
    log_p = model._log_p_z(z) if row.program == "vamp" else (-0.5 * z**2).sum(1)
    return {"z0": z0, "z": z, "log_q": log_q, "log_p": log_p}


# -- the suite side and the evaluator (ppl-vae's environment) ----------------------------


def suite_run(row: Row, seed: int, epochs: int):
    """``ppl-vae train MODEL --latent-dim 16 --hidden 400 --data mnist-5k --binarize dynamic
    --batch-size 100 --lr 1e-3`` with the row's options (``--objective``, ``--beta``, ...)."""
    from ppl_vae.infer.config import TrainConfig
    from ppl_vae.runs.config import RunConfig
    from ppl_vae.runs.train import train_run

    cfg = RunConfig(
        model=row.model,
        model_args={"latent_dim": LATENT, "hidden": [HIDDEN], **row.model_args},
        data="mnist-5k",
        binarize="dynamic",
        train=TrainConfig(
            epochs=epochs, batch_size=BATCH, lr=LR, seed=seed, progress=False, **row.train
        ),
    )
    run = train_run(cfg)
    return run.pair, run.metrics


def score(pair, x: torch.Tensor, row: Row, k: int) -> dict:
    """The one evaluator: per-digit IW log p(x) (K = ``k``) with rate and distortion, or the
    per-digit squared reconstruction error for a deterministic row."""
    from ppl_vae import traces
    from ppl_vae.measure.importance import iw_log_likelihood
    from ppl_vae.measure.metrics import evaluate

    with torch.no_grad():
        if row.deterministic:
            recon = torch.cat([traces.reconstruct(pair, pair.eval_args(b)) for b in x.split(500)])
            return {"per_digit": (recon - x).pow(2).sum(-1).double()}
        per_digit = iw_log_likelihood(pair, x, None, k, seed=123).double()
        m = evaluate(pair, x, seed=123)
    return {"per_digit": per_digit, "rate": m["rate"], "distortion": m["distortion"]}


def compare(row: Row, ours: dict, theirs: dict) -> dict:
    """Means, standard errors, the paired difference and the verdict (two paired SEs)."""
    a, b = ours.pop("per_digit"), theirs.pop("per_digit")
    n, diff = len(a), a - b
    d, se = float(diff.mean()), float(diff.std() / math.sqrt(len(a)))
    better = d < 0 if row.deterministic else d > 0  # an error is better lower
    verdict = "tie" if abs(d) <= 2 * se else ("suite" if better else "pythae")
    out = {"model": row.name, "measure": "recon SE" if row.deterministic else "IW log p(x)"}
    out |= {"suite": float(a.mean()), "suite_se": float(a.std() / math.sqrt(n))}
    out |= {"pythae": float(b.mean()), "pythae_se": float(b.std() / math.sqrt(n))}
    out |= {"difference": d, "paired_se": se, "sigmas": d / se if se else 0.0, "better": verdict}
    return (
        out
        | {f"suite_{k}": v for k, v in ours.items()}
        | {f"pythae_{k}": v for k, v in theirs.items()}
    )


def table(rows: list[dict]) -> str:
    head = (
        "| model | seed | measure | suite | pythae | suite - pythae (paired SE) | SEs | better |"
        " rate / distortion suite | rate / distortion pythae | train s suite / pythae |\n"
        "|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|\n"
    )

    def rd(r: dict, side: str) -> str:
        rate = r.get(f"{side}_rate")
        return "-" if rate is None else f"{rate:.1f} / {r[f'{side}_distortion']:.1f}"

    return head + "".join(
        f"| {r['model']} | {r['seed']} | {r['measure']} | {r['suite']:.2f} ± {r['suite_se']:.2f} | "
        f"{r['pythae']:.2f} ± {r['pythae_se']:.2f} | {r['difference']:+.2f} ({r['paired_se']:.2f})"
        f" | {r['sigmas']:+.1f} | {r['better']} | {rd(r, 'suite')} | {rd(r, 'pythae')} | "
        f"{r['suite_seconds']:.0f} / {r['pythae_seconds']:.0f} |\n"
        for r in rows
    )


def pythae_weights(args: argparse.Namespace, key: str, npz: Path, seed: int) -> Path:
    """Train pythae's side in its own interpreter (unless ``--reuse`` finds it done)."""
    weights = Path(args.out) / f"pythae-{key}-seed{seed}-ep{args.epochs}.safetensors"
    if not (args.reuse and weights.is_file()):
        cmd = [args.pythae_python, __file__, "--pythae-side", "--data", str(npz), "--row", key]
        cmd += ["--seed", str(seed), "--epochs", str(args.epochs), "--out", str(weights)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"the pythae side of {key} failed:\n{run.stderr[-3000:]}")
    return weights


def one_row(args: argparse.Namespace, key: str, ds, npz: Path, seed: int) -> dict:
    from safetensors.torch import load_file

    from ppl_vae.programs import from_object

    row = ROW_KEYS[key]
    weights = pythae_weights(args, key, npz, seed)
    theirs = PythaeProgram(row, load_file(weights))
    pair_theirs = from_object(theirs, ds.x_test[:2], name=f"pythae {row.pythae}")
    pair_ours, metrics = suite_run(row, seed, args.epochs)
    out = compare(
        row,
        score(pair_ours, ds.x_test, row, args.iwae_samples),
        score(pair_theirs, ds.x_test, row, args.iwae_samples),
    )
    out |= {"key": key, "seed": seed, "epochs": args.epochs, "K": args.iwae_samples}
    out["suite_seconds"] = metrics["seconds"]
    out["pythae_seconds"] = json.loads(weights.with_suffix(".json").read_text())["seconds"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pythae-python", default="/work/wt/pythae-venv/bin/python")
    p.add_argument("--rows", default=",".join(ROW_KEYS), help=f"of {', '.join(ROW_KEYS)}")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--iwae-samples", type=int, default=1000)
    p.add_argument("--out", default="/tmp/vs_pythae")
    p.add_argument("--reuse", action="store_true", help="reuse pythae weights already in --out")
    p.add_argument("--make-fixture", help=argparse.SUPPRESS)
    p.add_argument("--pythae-side", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--row", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.make_fixture:
        make_fixture(args.make_fixture)
        return 0
    if args.pythae_side:
        pythae_side(args)
        return 0
    keys = args.rows.split(",")
    if unknown := [k for k in keys if k not in ROW_KEYS]:
        p.error(f"unknown rows {unknown}; choose from {', '.join(ROW_KEYS)}")
    from ppl_vae import data

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = data.load("mnist-5k", binarize="dynamic")  # the fixed test draw, grey training rows
    npz = out / "mnist5k.npz"
    np.savez(npz, x_train=ds.x_train.numpy(), x_test=ds.x_test.numpy())
    done = out / f"vs_pythae-ep{args.epochs}.json"  # rows of earlier runs stay in the table
    rows = json.loads(done.read_text()) if done.is_file() else []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for key in keys:
            rows = [r for r in rows if (r["key"], r["seed"]) != (key, seed)]
            rows.append(one_row(args, key, ds, npz, seed))
            print(json.dumps(rows[-1]), flush=True)
            done.write_text(json.dumps(rows, indent=1))
            (out / f"vs_pythae-ep{args.epochs}.md").write_text(table(rows))
    print("\n" + table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
