"""The sites a measurement uses are those of the trace it computes on: sites that come and
go with the batch, global latents counted once over the evaluated set, and every term in
nats of the unscaled model beside the program's own (scaled) units. Oracles: closed forms
(a Gaussian sequence whose guide is the exact posterior), and Pyro's own ``Trace_ELBO`` /
``TraceEnum_ELBO`` on Pyro's programs, unchanged (``tests/pyro_programs/``)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch.distributions import constraints

from ppl_vae.errors import UserError
from ppl_vae.measure.amortization import amortization_gap
from ppl_vae.measure.calibration import calibrate
from ppl_vae.measure.importance import check_estimable, iw_log_likelihood
from ppl_vae.measure.metrics import evaluate
from ppl_vae.measure.stats import mean_and_se
from ppl_vae.programs import Programs

PROGRAMS = Path(__file__).resolve().parents[1] / "pyro_programs"


def pyro_program(name: str):
    """A verbatim copy of one of Pyro's programs (``tests/pyro_programs/<name>.py``)."""
    spec = importlib.util.spec_from_file_location(f"pyro_{name}", PROGRAMS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- a sequence whose length is read from a zero-padded x: one site per time step --------
def lengths_of(x: torch.Tensor) -> torch.Tensor:
    return (x != 0).sum(-1)


def seq_model(x):
    lengths = lengths_of(x)
    with pyro.plate("data", x.shape[0]):
        for t in range(int(lengths.max())):
            with poutine.mask(mask=lengths > t):
                z = pyro.sample(f"z_{t}", dist.Normal(0.0, 1.0))
                pyro.sample(f"x_{t}", dist.Normal(z, 1.0), obs=x[:, t])


def seq_guide(x):
    """The exact posterior at its defaults: z_t | x_t ~ N(x_t / 2, 1 / 2)."""
    lengths = lengths_of(x)
    a = pyro.param("a", torch.tensor(0.5))
    s = pyro.param("s", torch.tensor(0.5**0.5), constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        for t in range(int(lengths.max())):
            with poutine.mask(mask=lengths > t):
                pyro.sample(f"z_{t}", dist.Normal(a * x[:, t], s))


def sequences(n: int = 40, width: int = 12, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (n,), generator=g)
    values = torch.randn(n, width, generator=g) * 2**0.5
    values = values + values.sign() * 1e-3  # never exactly the padding value
    x = torch.where(torch.arange(width) < lengths[:, None], values, torch.zeros(()))
    return x[torch.argsort(lengths)]  # sorted by length: the first rows are the shortest


def exact(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x) and KL(q(z|x) || p(z)) per sequence (x_t ~ N(0, 2); q the posterior)."""
    on = torch.arange(x.shape[1]) < lengths_of(x)[:, None]
    log_p = torch.where(on, dist.Normal(0.0, 2**0.5).log_prob(x), torch.zeros(())).sum(-1)
    kl = torch.where(on, 0.5 * (0.5 + x**2 / 4 - 1 + math.log(2)), torch.zeros(())).sum(-1)
    return log_p, kl


@pytest.mark.parametrize("order", ["by length", "shuffled"])
def test_sites_that_vary_with_the_batch_are_all_measured_whatever_the_row_order(order):
    x = sequences()
    if order == "shuffled":
        x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))]
    log_p, kl = exact(x)
    pair = Programs(seq_model, seq_guide, x[:2])  # traced on two rows, as fit's example
    ll = iw_log_likelihood(pair, x, num_samples=8, batch_size=4)
    assert torch.allclose(ll, log_p, atol=1e-4)  # the exact posterior: every weight is p(x)
    out = evaluate(pair, x, batch_size=4, draws=4)
    assert out["rate"] == pytest.approx(float(kl.mean()), abs=1e-5)  # analytic, every site
    assert abs(out["elbo"] - float(log_p.mean())) < 4 * out["elbo_stderr"]
    assert out["elbo_scaled"] == pytest.approx(out["elbo"], rel=1e-7)  # nothing scaled
    assert out["kl_per_dim"] is None and out["active_units"] is None  # no fixed code width


def test_a_pair_first_traced_on_its_longest_rows_measures_batches_lacking_their_sites():
    x = sequences()  # sorted by length: the last rows have sites the first batches lack
    log_p, kl = exact(x)
    pair = Programs(seq_model, seq_guide, x[:2], batch=x[-10:])  # data sites x_0..x_11
    out = evaluate(pair, x, batch_size=7, draws=4)  # KeyError 'x_2' before
    assert out["rate"] == pytest.approx(float(kl.mean()), abs=1e-5)
    assert abs(out["elbo"] - float(log_p.mean())) < 4 * out["elbo_stderr"]
    assert out["recon_mse"] is None  # not every batch reconstructs x in one layout


# -- global latents: one draw shared by the set, counted once ------------------------------
D = 3


def global_model(x):
    g = pyro.sample("g", dist.Normal(0.0, 1.0))  # outside the data plate
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample(
            "x", dist.Normal(g + z[:, None], 1.0).expand([x.shape[0], D]).to_event(1), obs=x
        )


def global_guide(x):
    pyro.sample("g", dist.Normal(pyro.param("m", torch.tensor(0.8)), 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x.mean(-1), 1.0))


def test_a_global_site_counts_once_over_the_evaluated_set_in_any_batches():
    x = torch.randn(10, D)
    pair = Programs(global_model, global_guide, x[:2])
    assert pair.latent_sites == ("z",) and pair.global_sites == ("g",)
    assert pair.all_latent_sites == ("g", "z") and pair.latent_sizes == (1,)
    kl_z = (x.mean(-1) ** 2 / 2).mean()  # KL(N(m, 1) || N(0, 1)) = m^2 / 2
    for batch_size in (3, 10):
        out = evaluate(pair, x, batch_size=batch_size)
        assert out["rate"] == pytest.approx(float(kl_z) + 0.8**2 / 2 / 10, abs=1e-6)
        assert out["kl_per_dim"] is None and out["active_units"] is not None
    with pytest.raises(UserError, match="global latent sites \\(g\\)"):
        check_estimable(pair)
    with pytest.raises(UserError, match="amortisation gap compares per-example guides"):
        amortization_gap(pair, x[:2])
    with pytest.raises(UserError, match="shared by all simulations"):
        calibrate(pair, x)


# -- the program's own scale: nats beside the program's units --------------------------------
def scaled_pair(scale: float, x: torch.Tensor) -> Programs:
    def model(x):
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=scale):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            loc = z @ torch.ones(2, D)
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(x):
        w = pyro.param("w", torch.full((D, 2), 0.3))
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=scale):
            pyro.sample("z", dist.Normal(x @ w, 0.7).to_event(1))

    return Programs(model, guide, x)


def test_a_scaled_program_reports_nats_and_its_own_units_with_every_term_scaled():
    x = torch.randn(20, D)
    plain, scaled = scaled_pair(1.0, x), scaled_pair(0.01, x)
    assert plain.analytic_kl_sites == scaled.analytic_kl_sites == ("z",)
    a, b = evaluate(plain, x, batch_size=7), evaluate(scaled, x, batch_size=7)
    for key in ("elbo", "rate", "distortion", "elbo_stderr"):  # nats: the scale is undone
        assert b[key] == pytest.approx(a[key], rel=1e-5), key
    assert a["elbo_scaled"] == pytest.approx(a["elbo"], rel=1e-6)
    # the program's units: the analytic KL carries its site's scale as the log-probs do
    assert b["elbo_scaled"] == pytest.approx(0.01 * a["elbo"], rel=1e-5)


# -- Pyro's programs, unchanged: the suite's ELBO equals Pyro's own estimate ---------------
def monte_carlo(values: list[float]) -> tuple[float, float]:
    """The mean of independent estimates and its standard error."""
    return mean_and_se(torch.tensor(values, dtype=torch.float64))


def test_sparse_gamma_def_trains_full_batch_and_its_elbo_is_pyros_trace_elbo():
    """Pyro's sparse gamma DEF: a non-amortised guide (per-example ``pyro.param`` of shape
    (N, width), made by the first trace on the real, full batch) and global weights. Its
    ELBO per example on the trained weights is Pyro's ``Trace_ELBO`` over the whole set / N
    (the global sites counted once), within the Monte Carlo standard errors of both."""
    from ppl_vae.data.dataset import Dataset
    from ppl_vae.infer import TrainConfig, fit
    from ppl_vae.runs.evaluate import evaluation

    n = 16
    counts = torch.distributions.Poisson(2.0).sample((n, 64 * 64))
    data = Dataset("faces", counts, counts)  # non-amortised: scored on its own rows
    sg = pyro_program("sparse_gamma_def").MODEL()
    config = TrainConfig(epochs=3, batch_size=n, lr=0.01, progress=False, device="cpu")
    pair = fit(sg.model, sg.guide, data, config).pair
    assert pair.global_sites == ("w_top", "w_mid", "w_bottom")
    assert pair.latent_sites == ("z_top", "z_mid", "z_bottom") and pair.first_batch_size == n
    with pair.scope():
        assert pyro.param("alpha_z_q_top").shape == (n, 100)
    ours = monte_carlo([evaluate(pair, counts, seed=s)["elbo"] for s in range(30)])
    with pair.scope(), torch.no_grad():
        pyro.set_rng_seed(1)
        theirs = [-pyro.infer.Trace_ELBO().loss(sg.model, sg.guide, counts) / n for _ in range(60)]
    theirs = monte_carlo(theirs)
    assert abs(ours[0] - theirs[0]) < 4 * math.hypot(ours[1], theirs[1]), (ours, theirs)
    record = evaluation(pair, counts, num_samples=2, draws=1)
    assert "global latent sites (w_top, w_mid, w_bottom)" in record["log_likelihood_note"]
    assert record["test_elbo_scaled"] == pytest.approx(record["test_elbo"])
    assert record["kl_per_dim"] is None and record["active_units"] is not None


def cells(n: int, genes: int = 40, types: int = 4, seed: int = 0):
    """Counts shaped like scANVI's PBMC cells: a profile per cell type, a library size."""
    g = torch.Generator().manual_seed(seed)
    profiles = torch.rand(types, genes, generator=g).pow(3) + 0.01
    profiles = profiles / profiles.sum(-1, keepdim=True)
    y = torch.randint(0, types, (n,), generator=g)
    size = torch.exp(5.0 + 0.3 * torch.randn(n, 1, generator=g))
    x = torch.poisson(size * profiles[y], generator=g)
    return x, torch.nn.functional.one_hot(y, types).float()


def test_scanvi_with_its_scale_factor_is_reported_in_nats_and_its_own_units():
    """Pyro's scANVI with its ``main()``'s ``scale_factor = 1 / (batch_size * num_genes)``
    and its enumerated guide, trained by its own loop (``TraceEnum_ELBO``, Adam) on the
    pair's parameters. On the test cells the suite's ELBO (guide draws of the cell type)
    equals Pyro's ``TraceEnum_ELBO`` per cell (the cell type summed out), in the program's
    units and, divided by the scale, in nats per cell, within their standard errors."""
    from pyro.infer import SVI, TraceEnum_ELBO, config_enumerate

    batch, genes = 50, 40
    x, y = cells(200, genes)
    x_test, _ = cells(100, genes, seed=1)
    library = x.sum(-1).log()
    scanvi = pyro_program("scanvi").MODEL(
        genes, l_loc=float(library.mean()), l_scale=float(library.std()), batch_size=batch
    )
    scale = scanvi.scale_factor
    guide = config_enumerate(scanvi.guide, "parallel", expand=True)
    pyro.set_rng_seed(0)
    pair = Programs(scanvi.model, guide, x[:2], batch=x[:batch])
    assert pair.enumerated == ("y",) and pair.latent_sites == ("l", "z2", "y", "z1")
    elbo = TraceEnum_ELBO(strict_enumeration_warning=False)
    with pair.scope():
        svi = SVI(scanvi.model, guide, pyro.optim.Adam({"lr": 0.005}), elbo)
        for _ in range(3):  # Pyro's loop: half the cells labelled
            for k in range(0, x.shape[0], batch):
                labelled = (k // batch) % 2 == 0
                svi.step(x[k : k + batch], y[k : k + batch] if labelled else None)
    scanvi.eval()  # as Pyro's main() before it reads the encoder
    ours = evaluate(pair, x_test, draws=4)
    assert not scanvi.training  # left as the user set it
    assert ours["elbo_scaled"] == pytest.approx(scale * ours["elbo"])
    with pair.scope(), torch.no_grad():
        per_cell = torch.tensor(
            [-elbo.loss(scanvi.model, guide, x_test[i : i + 1]) for i in range(len(x_test))]
        )
    theirs = monte_carlo((per_cell / scale).tolist())
    assert abs(ours["elbo"] - theirs[0]) < 4 * math.hypot(ours["elbo_stderr"], theirs[1])
    scaled = monte_carlo(per_cell.tolist())
    assert abs(ours["elbo_scaled"] - scaled[0]) < 4 * math.hypot(
        ours["elbo_scaled_stderr"], scaled[1]
    )


# -- sites the model enumerates: summed out by TraceEnum_ELBO's machinery -------------------
WEIGHTS = torch.tensor([0.2, 0.3, 0.5])
LOCS = torch.tensor([[-2.0, 0.0], [0.0, 1.0], [2.0, 2.0]])


@pyro.infer.config_enumerate
def mixture_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        c = pyro.sample("c", dist.Categorical(WEIGHTS))
        pyro.sample("x", dist.Normal(LOCS[c] + z, 1.0).to_event(1), obs=x)


def mixture_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Delta(0.3 * x, event_dim=1))


def test_a_site_the_model_enumerates_is_summed_out_exactly_per_example():
    """The model enumerates the component c (``config_enumerate``); at the guide's point
    z0 = 0.3 x the ELBO of each example is log p(z0) + log sum_c w_c N(x; loc_c + z0, I),
    and ``enum_elbo`` per example is ``TraceEnum_ELBO`` of that example alone."""
    from pyro.infer import TraceEnum_ELBO

    from ppl_vae import traces

    x = torch.randn(9, 2) * 2
    pair = Programs(mixture_model, mixture_guide, x[:2])
    assert pair.model_enumerated == ("c",) and pair.latent_sites == ("z",)
    z0 = 0.3 * x
    prior = dist.Normal(0.0, 1.0).log_prob(z0).sum(-1)
    components = dist.Normal(LOCS + z0[:, None], 1.0).log_prob(x[:, None]).sum(-1)
    lik = torch.logsumexp(components + WEIGHTS.log(), -1)
    out = evaluate(pair, x, batch_size=4)
    assert out["elbo"] == pytest.approx(float((prior + lik).mean()), abs=1e-5)
    assert out["distortion"] == pytest.approx(float(-lik.mean()), abs=1e-5)
    assert out["rate"] == pytest.approx(float(-prior.mean()), abs=1e-5)
    per = traces.enum_elbo(pair, (x,))
    with pair.scope():
        alone = [
            -TraceEnum_ELBO(max_plate_nesting=1).loss(mixture_model, mixture_guide, r[None])
            for r in x
        ]
    assert torch.allclose(per, torch.tensor(alone), atol=1e-5)
