"""``--elbo tracegraph`` and ``--elbo renyi``: the loss and gradients of Pyro's own
``TraceGraph_ELBO`` and ``RenyiELBO`` (``loss_and_grads``) on the same weights, batch and
draws, for a reparameterised VAE and for a program with a discrete (score-function)
latent site and a baseline; the Renyi bound of order 0 against the IWAE formula; and both
trained end to end from the CLI."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from ppl_vae.cli import main
from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.elbo import make_elbo
from ppl_vae.infer.objective import Objective
from ppl_vae.programs import Programs


class Switch(nn.Module):
    """s ~ Bernoulli(0.3), x ~ N(W s, 1); q(s | x) Bernoulli(sigmoid(a x)), drawn without
    rsample, with a neural baseline (AIR's ``infer={"baseline": {"nn_baseline": ...}}``)."""

    def __init__(self, x_dim: int = 8):
        super().__init__()
        self.dec, self.enc, self.baseline = (
            nn.Linear(1, x_dim),
            nn.Linear(x_dim, 1),
            nn.Sequential(nn.Linear(x_dim, 1), nn.Flatten(0)),  # one value per example
        )

    def model(self, x):
        pyro.module("dec", self.dec)
        with pyro.plate("data", x.shape[0]):
            s = pyro.sample("s", dist.Bernoulli(x.new_full((x.shape[0],), 0.3)))
            pyro.sample("x", dist.Normal(self.dec(s.unsqueeze(-1)), 1.0).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("enc", self.enc)
        pyro.module("baseline", self.baseline)
        with pyro.plate("data", x.shape[0]):
            infer = {"baseline": {"nn_baseline": self.baseline, "nn_baseline_input": x}}
            probs = torch.sigmoid(self.enc(x)).squeeze(-1)
            pyro.sample("s", dist.Bernoulli(probs), infer=infer)


def tutorial_vae(x_dim: int):
    """Pyro's VAE tutorial (``pyro.module``: Pyro's RenyiELBO differentiates only programs
    whose traces hold param sites, which the suite's PyroModule programs do not)."""
    path = Path(__file__).resolve().parents[2] / "examples" / "tutorial_vae.py"
    spec = importlib.util.spec_from_file_location("tutorial_vae", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VAE(x_dim=x_dim, z_dim=2, hidden_dim=16)


def programs(kind: str, x: torch.Tensor) -> Programs:
    pyro.set_rng_seed(3)
    owner = tutorial_vae(x.shape[1]) if kind == "vae" else Switch(x.shape[1])
    return Programs(owner.model, owner.guide, (x[:2],))


def ours(pair: Programs, elbo, x: torch.Tensor, seed: int):
    loss_fn = Objective(pair, elbo)
    params = list(pair.parameters())
    with pair.scope():
        pyro.set_rng_seed(seed)
        loss = loss_fn(x)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    return float(loss.detach()), [
        torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)
    ]


def pyros(pair: Programs, elbo, x: torch.Tensor, seed: int):
    params = list(pair.parameters())
    for p in params:
        p.grad = None
    with pair.scope():
        pyro.set_rng_seed(seed)
        loss = elbo.loss_and_grads(pair.model, pair.guide, x)
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
    return loss, grads


CASES = [
    ("tracegraph", "vae", 1),
    ("tracegraph", "switch", 1),
    ("tracegraph", "switch", 4),
    ("renyi", "vae", 5),
    ("renyi", "switch", 5),
]


@pytest.mark.parametrize("kind, program, particles", CASES)
def test_the_loss_and_gradients_are_pyros_own(kind, program, particles):
    x = torch.randn(12, 8, generator=torch.Generator().manual_seed(1))
    if program == "vae":
        x = (x > 0).float()
    pair = programs(program, x)
    options = {"alpha": 0.5} if kind == "renyi" and program == "switch" else {}
    reference = {
        "tracegraph": pyro.infer.TraceGraph_ELBO,
        "renyi": pyro.infer.RenyiELBO,
    }[kind](
        num_particles=particles,
        vectorize_particles=kind == "renyi",
        max_plate_nesting=1,  # what the engine passes (the programs' data plate)
        **options,
    )
    elbo = make_elbo(kind, particles, alpha=options.get("alpha", 0.0))
    for seed in (0, 1):
        loss, grads = ours(pair, elbo, x, seed)
        theirs, their_grads = pyros(pair, reference, x, seed)
        assert loss == pytest.approx(theirs, rel=1e-5)
        assert any(g.abs().sum() > 0 for g in grads)
        for a, b in zip(grads, their_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_renyi_of_order_zero_is_the_iwae_bound_by_its_formula():
    """log (1/K) sum_k p(x, z_k) / q(z_k | x) per example, summed, from the traces of the
    same K draws."""
    x = (torch.randn(6, 8, generator=torch.Generator().manual_seed(2)) > 0).float()
    pair, k = programs("vae", x), 7
    elbo = make_elbo("renyi", k)
    with pair.scope():
        pyro.set_rng_seed(5)
        loss = float(Objective(pair, elbo)(x).detach())
        pyro.set_rng_seed(5)
        with pyro.plate("particles", k, dim=-2):  # Pyro's vectorised particles
            guide_trace = pyro.poutine.trace(pair.guide).get_trace(x)
            model_trace = pyro.poutine.trace(
                pyro.poutine.replay(pair.model, trace=guide_trace)
            ).get_trace(x)
    log_w = sum(
        s["fn"].log_prob(s["value"]) for s in model_trace.nodes.values() if s["type"] == "sample"
    ) - sum(
        s["fn"].log_prob(s["value"]) for s in guide_trace.nodes.values() if s["type"] == "sample"
    )
    assert log_w.shape == (k, 6)
    iwae = (torch.logsumexp(log_w, 0) - math.log(k)).sum()
    assert -loss == pytest.approx(float(iwae.detach()), rel=1e-5)


@pytest.mark.parametrize("program", ["vae", "switch"])
def test_tmc_is_pyros_tensor_monte_carlo_of_the_guide_drawn_k_times(program):
    """The loss and gradients of Pyro's ``TraceTMC_ELBO`` with the guide wrapped in
    ``config_enumerate(..., "parallel", num_samples=K)``, as Pyro's TMC tests do."""
    x = torch.randn(12, 8, generator=torch.Generator().manual_seed(1))
    if program == "vae":
        x = (x > 0).float()
    pair, k = programs(program, x), 4
    reference = pyro.infer.TraceTMC_ELBO(max_plate_nesting=1)
    guide = pyro.infer.config_enumerate(pair.guide, "parallel", num_samples=k)
    params = list(pair.parameters())
    for seed in (0, 1):
        loss, grads = ours(pair, make_elbo("tmc", k), x, seed)
        with pair.scope():
            pyro.set_rng_seed(seed)
            theirs = reference.differentiable_loss(pair.model, guide, x)
            their_grads = torch.autograd.grad(theirs, params, allow_unused=True)
        assert loss == pytest.approx(float(theirs.detach()), rel=1e-5)
        for a, b in zip(grads, their_grads):
            torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b)


def test_tmc_of_one_latent_site_estimates_the_iwae_bound():
    """For one latent site, TMC with K draws is the importance-weighted bound with K draws:
    over 300 seeds each, the two estimators agree within 4 standard errors."""
    x = (torch.randn(6, 8, generator=torch.Generator().manual_seed(2)) > 0).float()
    pair, k = programs("vae", x), 5
    estimates = {}
    for kind in ("tmc", "renyi"):
        loss_fn, values = Objective(pair, make_elbo(kind, k)), []
        with pair.scope(), torch.no_grad():
            for seed in range(300):
                pyro.set_rng_seed(1000 * (kind == "tmc") + seed)
                values.append(float(loss_fn(x)))
        estimates[kind] = torch.tensor(values)
    a, b = estimates["tmc"], estimates["renyi"]
    se = math.sqrt(a.var() / len(a) + b.var() / len(b))
    assert abs(float(a.mean() - b.mean())) < 4 * se, (float(a.mean()), float(b.mean()), se)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"renyi_alpha": 0.5}, "--renyi-alpha applies to --elbo renyi"),
        ({"elbo": "renyi", "renyi_alpha": 1.0}, "is the ELBO itself"),
        ({"elbo": "renyi", "beta": 2.0}, "drop --beta options"),
        ({"elbo": "tmc", "beta_schedule": "linear"}, "drop --beta options"),
    ],
)
def test_renyi_settings_are_checked(settings, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(**settings).validate()


@pytest.mark.parametrize(
    "flags, elbo",
    [
        (["--elbo", "tracegraph"], "tracegraph"),
        (["--elbo", "renyi", "--num-particles", "4"], "renyi"),
        (["--elbo", "tmc", "--num-particles", "4"], "tmc"),
    ],
)
def test_each_estimator_trains_from_the_cli(flags, elbo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = "vae --data digits --latent-dim 2 --hidden 16 --epochs 2 --no-progress".split()
    assert main(["train", *common, *flags, "--out", "run"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["elbo"] == elbo and metrics["elbo_reason"].startswith(f"{elbo} (asked for)")
    assert metrics["history"][1]["test_elbo"] > metrics["history"][0]["test_elbo"]
    if elbo == "tracegraph":  # its baselines' moving averages: a side effect per step
        assert metrics["jit"].startswith("eager: the tracegraph estimator updates its baselines")
    else:
        assert metrics["jit"] == "traced"
