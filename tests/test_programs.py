"""The program contract: :mod:`ppl_vae.programs` finds the parameters of any Pyro
model/guide pair and keeps runs isolated, :mod:`ppl_vae.infer.latent_scale` applies beta to the
latent sites only, :mod:`ppl_vae.traces` reads the ELBO's terms off the traces, and
importing ``ppl_vae`` changes no global state."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.distributions import constraints
from pyro.nn import PyroModule
from torch import nn
from torch.distributions import Bernoulli, Normal, kl_divergence, transform_to

from ppl_vae import registry, traces
from ppl_vae.data.dataset import Dataset
from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.elbo import make_elbo
from ppl_vae.infer.latent_scale import LatentScaleMessenger
from ppl_vae.infer.objective import Objective, scaled
from ppl_vae.infer.recommend import recommended, recommended_config
from ppl_vae.infer.trainer import fit
from ppl_vae.programs import Programs

ROOT = Path(__file__).resolve().parents[1]
D, Z, H = 8, 2, 16


def toy_data(n: int = 96, labels: bool = False, seed: int = 0) -> Dataset:
    """Rows in [0, 1]; with labels, column 0 encodes the label (``x[:, 0] = y / 9``)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, D, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    if labels:
        x[:, 0] = y / 9
    cut = n * 3 // 4
    return Dataset(
        "toy",
        x[:cut],
        x[cut:],
        y[:cut] if labels else None,
        y[cut:] if labels else None,
    )


CFG = dict(epochs=2, batch_size=16, lr=1e-2, progress=False, device="cpu")


# -- three ways to write a program pair --------------------------------------------------


class TutorialVAE(nn.Module):
    """(a) Bound methods of one module that call ``pyro.module`` (Pyro's VAE tutorial)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(D, 2 * Z)
        self.decoder = nn.Linear(Z, D)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            loc = x.new_zeros(x.shape[0], Z)
            z = pyro.sample("latent", dist.Normal(loc, 1.0).to_event(1))
            probs = torch.sigmoid(self.decoder(z))
            pyro.sample("obs", dist.Bernoulli(probs, validate_args=False).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.encoder(x).chunk(2, -1)
            pyro.sample("latent", dist.Normal(loc, F.softplus(raw) + 1e-3).to_event(1))

    def parts(self):
        return self.encoder, self.decoder, self.model, self.guide


class Model(PyroModule):
    """(b) Two ``PyroModule`` programs (``pyro.contrib.cevae`` style)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(Z, D)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], Z), 1.0).to_event(1))
            logits = self.net(z)
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)


class Guide(PyroModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(D, 2 * Z)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.net(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, F.softplus(raw) + 1e-3).to_event(1))


def fn_model(x):
    """(c) Plain functions with ``pyro.param``, one of them constrained positive."""
    w = pyro.param("w", torch.full((Z, D), 0.1))
    scale = pyro.param("scale", torch.ones(D), constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], Z), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ w, scale).to_event(1), obs=x)


def fn_guide(x):
    a = pyro.param("a", torch.zeros(D, Z))
    s = pyro.param("s", torch.ones(Z), constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x @ a, s).to_event(1))


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_parameters_of_bound_methods_with_pyro_module():
    vae = TutorialVAE()
    pair = Programs(vae.model, vae.guide, torch.rand(4, D))
    assert {id(p) for p in pair.parameters()} == {id(p) for p in vae.parameters()}
    assert pair.latent_sites == ("latent",) and pair.observed_sites == ("obs",)
    assert pair.latent_dim == Z and not pair.takes_labels and not pair.point_mass


def test_parameters_of_two_pyro_modules():
    model, guide = Model(), Guide()
    pair = Programs(model, guide, torch.rand(4, D))
    expected = {id(p) for m in (model, guide) for p in m.parameters()}
    assert {id(p) for p in pair.parameters()} == expected and len(expected) == 4
    before = snapshot(pair)
    fit(pair, None, toy_data(), TrainConfig(**CFG))
    assert all(not torch.equal(before[k], v) for k, v in pair.named_parameters())


def test_parameters_of_plain_functions_with_a_constrained_param():
    pair = Programs(fn_model, fn_guide, torch.rand(4, D))
    assert set(pair.store.keys()) == {"w", "scale", "a", "s"}
    assert pyro.get_param_store().keys() == set()  # nothing leaked into the global store
    # The module holds the unconstrained leaf; inside the scope pyro.param is constrained.
    fit(pair, None, toy_data(), TrainConfig(**{**CFG, "lr": 0.05}))
    with pair.scope():
        scale = pyro.param("scale")
    assert (scale > 0).all() and not torch.allclose(scale, torch.ones(D))
    assert torch.allclose(transform_to(constraints.positive)(pair.store["scale"]), scale)
    assert (pair.store["scale"] < 0).any()  # a log-scale, free to go negative


def test_runs_in_one_process_are_isolated():
    """Two programs with the same parameter names, trained one after the other: the second
    starts from its own initial values and trains, and the first is left as it was."""
    data = toy_data()
    first = Programs(fn_model, fn_guide, data.x_train[:2])
    fit(first, None, data, TrainConfig(**CFG))
    trained_first = snapshot(first)
    second = Programs(fn_model, fn_guide, data.x_train[:2])
    initial = snapshot(second)
    assert torch.equal(initial["store.w"], torch.full((Z, D), 0.1))  # not the first's values
    assert all(p is not q for p in first.parameters() for q in second.parameters())
    fit(second, None, data, TrainConfig(**{**CFG, "seed": 1}))
    assert all(not torch.equal(initial[k], v) for k, v in second.named_parameters())
    assert all(torch.equal(trained_first[k], v) for k, v in first.named_parameters())
    # The same holds for module programs trained back to back.
    a, b = TutorialVAE(), TutorialVAE()
    fit(a.model, a.guide, data, TrainConfig(**CFG))
    kept, start_b = snapshot(a), snapshot(b)
    fit(b.model, b.guide, data, TrainConfig(**CFG))
    assert all(torch.equal(kept[k], v) for k, v in a.named_parameters())
    assert all(not torch.equal(start_b[k], v) for k, v in b.named_parameters())


def test_programs_that_take_labels_get_the_batchs_labels():
    seen = []

    def model(x, y):
        seen.append(bool(torch.equal((x[:, 0] * 9).round().long(), y)))
        loc = pyro.param("emb", torch.zeros(10, Z))[y]  # a label-conditional prior
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            pyro.sample(
                "x", dist.Normal(z @ pyro.param("w", torch.zeros(Z, D)), 1.0).to_event(1), obs=x
            )

    def guide(x, y):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ pyro.param("a", torch.zeros(D, Z)), 1.0).to_event(1))

    data = toy_data(labels=True)
    result = fit(model, guide, data, TrainConfig(**CFG))
    assert result.pair.takes_labels
    assert len(seen) > 2 * (72 // 16) and all(seen)  # every training and evaluation batch
    # Without labels in the data: a UserError that names the missing labels argument.
    with pytest.raises(UserError, match="labels|'y'"):
        fit(model, guide, toy_data(labels=False), TrainConfig(**CFG))


class Recommends(TutorialVAE):
    """A module that recommends training settings, as m2-vae and Pyro's SSVAE do."""

    train_defaults = {"lr": 0.05, "batch_size": 24, "epochs": 1, "progress": False}


def test_fit_takes_an_explicit_config_as_is_and_recommended_config_combines():
    """Without a config the module's train_defaults apply; a TrainConfig passed is taken as
    is; recommended_config(model, guide, **yours) is the first with yours over it."""
    data = toy_data()
    m = Recommends()
    assert recommended(m.model, m.guide) == Recommends.train_defaults
    pair = Programs(m.model, m.guide, data.x_train[:2])
    assert recommended(pair) == Recommends.train_defaults  # a pair, as fit accepts
    used = fit(m.model, m.guide, data).config  # no config: the recommended settings
    assert (used.lr, used.batch_size, used.epochs) == (0.05, 24, 1)
    assert used == recommended_config(m.model, m.guide)
    m = Recommends()
    used = fit(m.model, m.guide, data, TrainConfig(**CFG)).config  # as is: CFG's lr, batch
    assert (used.lr, used.batch_size, used.epochs) == (CFG["lr"], CFG["batch_size"], 2)
    combined = recommended_config(m.model, m.guide, epochs=3, lr=0.002)  # yours win
    assert (combined.lr, combined.batch_size, combined.epochs) == (0.002, 24, 3)
    assert combined == TrainConfig.from_dict(
        {**recommended(m.model, m.guide), "epochs": 3, "lr": 0.002}
    )  # the README's spelling
    with pytest.raises(TypeError, match="'epoch'"):  # a typo is not dropped silently
        recommended_config(m.model, m.guide, epoch=3)


# -- beta: the latent-scale messenger and the oracle ------------------------------------------


def test_the_module_is_found_behind_handlers_and_in_a_factorys_closure():
    """Pyro's ss_vae_M2.py wraps the guide in config_enumerate, and a factory may return a
    closure that calls two of a module's programs (main()'s model + model_classify): the
    module (its train_defaults, classifier, parameters) is found in each case."""
    from pyro.infer import config_enumerate

    from ppl_vae.programs import owner_of

    m, other = Recommends(), Recommends()

    def model(x):  # a factory's closure over one module
        m.model(x)

    def two(x):  # over two modules: no single owner
        m.model(x), other.model(x)

    assert owner_of(config_enumerate(m.guide, "parallel", expand=True)) is m
    assert owner_of(model) is m and owner_of(poutine.scale(model, 2.0)) is m
    assert owner_of(two) is None and owner_of(fn_model) is None
    assert recommended(model, config_enumerate(m.guide)) == Recommends.train_defaults
    pair = Programs(model, m.guide, toy_data().x_train[:2])
    assert list(pair.owners) == [m] and pair.name == "Recommends"


def hierarchical_model(x):
    w = pyro.param("w", torch.zeros(Z, D))
    with pyro.plate("data", x.shape[0]):
        z1 = pyro.sample("z1", dist.Normal(x.new_zeros(x.shape[0], Z), 1.0).to_event(1))
        z2 = pyro.sample("z2", dist.Normal(z1, 1.0).to_event(1))
        with poutine.scale(scale=0.5):  # a user's own scale stays and composes
            pyro.sample("x", dist.Normal(z2 @ w, 1.0).to_event(1), obs=x)


def hierarchical_guide(x):
    a = pyro.param("a", torch.zeros(D, Z))
    with pyro.plate("data", x.shape[0]):
        z1 = pyro.sample("z1", dist.Normal(x @ a, 1.0).to_event(1))
        pyro.sample("z2", dist.Normal(z1, 1.0).to_event(1))


def test_latent_scale_scales_only_the_latent_sites():
    pair = Programs(hierarchical_model, hierarchical_guide, torch.rand(3, D))
    assert pair.latent_sites == ("z1", "z2")
    model, guide = scaled(pair, 3.0)
    x = torch.rand(5, D)
    with pair.scope():
        guide_tr = poutine.trace(guide).get_trace(x)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
    for tr in (guide_tr, model_tr):
        assert tr.nodes["z1"]["scale"] == 3.0 and tr.nodes["z2"]["scale"] == 3.0
    assert model_tr.nodes["x"]["scale"] == 0.5  # observed: only the user's own scale
    assert scaled(pair, 1.0) == (pair.model, pair.guide)  # beta = 1 wraps nothing

    def program():
        pyro.sample("latent", dist.Normal(0.0, 1.0))
        pyro.sample("other", dist.Normal(0.0, 1.0))
        with poutine.scale(scale=2.0):
            pyro.sample("nested", dist.Normal(0.0, 1.0))

    tr = poutine.trace(LatentScaleMessenger(4.0, ["latent", "nested"])(program)).get_trace()
    assert [tr.nodes[n]["scale"] for n in ("latent", "other", "nested")] == [4.0, 1.0, 8.0]


@pytest.mark.parametrize("beta", [0.25, 1.0, 4.0])
def test_meanfield_loss_is_reconstruction_plus_beta_kl_for_a_user_program(beta):
    """With TraceMeanField_ELBO the loss is exactly -E_q[log p(x|z)] + beta * KL(q || p),
    computed here with torch.distributions from the same reparameterised draw."""
    torch.manual_seed(1)
    vae = TutorialVAE()
    x = torch.rand(16, D)
    pair = Programs(vae.model, vae.guide, x)
    loss_fn = Objective(pair, make_elbo("meanfield"))
    torch.manual_seed(7)
    loss = loss_fn(x, beta=beta)
    torch.manual_seed(7)  # the guide's rsample is the only draw: replay it by hand
    loc, raw = vae.encoder(x).chunk(2, -1)
    q = Normal(loc, F.softplus(raw) + 1e-3)
    z = q.rsample()
    recon = Bernoulli(probs=torch.sigmoid(vae.decoder(z)), validate_args=False).log_prob(x).sum()
    kl = kl_divergence(q, Normal(torch.zeros_like(loc), torch.ones_like(loc))).sum()
    expected = -recon + beta * kl
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-4), (float(loss), float(expected))


# -- traces: the terms, codes and decodings -------------------------------------------------


def linear_pair(x):
    return Programs(fn_model, fn_guide, x)


def test_terms_are_the_sites_log_densities_per_example():
    x = torch.rand(5, D)
    pair = linear_pair(x)
    with pair.scope():
        w, scale, a, s = (pyro.param(n) for n in ("w", "scale", "a", "s"))
    torch.manual_seed(0)
    t = traces.terms(pair, (x,))
    torch.manual_seed(0)
    z = Normal(x @ a, s).rsample()
    log_q = Normal(x @ a, s).log_prob(z).sum(-1)
    log_p = Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_lik = Normal(z @ w, scale).log_prob(x).sum(-1)
    for key, want in (("log_q", log_q), ("log_prior", log_p), ("log_lik", log_lik)):
        assert t[key].shape == (5,) and torch.allclose(t[key], want, atol=1e-5), key
    kl = kl_divergence(Normal(x @ a, s), Normal(0.0, 1.0))
    assert torch.allclose(t["kl_dims/z"], kl, atol=1e-5)  # analytic, per dimension
    assert torch.allclose(t["kl/z"], kl.sum(-1), atol=1e-5)
    tp = traces.terms(pair, (x,), particles=7)
    assert all(tp[k].shape == (7, 5) for k in ("log_q", "log_prior", "log_lik"))


def test_a_global_site_is_shared_equally_by_the_batch():
    def model(x):
        g = pyro.sample("g", dist.Normal(0.0, 1.0))  # outside the data plate
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(g, 1.0).expand([x.shape[0], D]).to_event(1), obs=x)

    def guide(x):
        pyro.sample("g", dist.Normal(pyro.param("m", torch.tensor(0.3)), 1.0))

    x = torch.rand(4, D)
    pair = Programs(model, guide, x)
    torch.manual_seed(3)
    model_tr, guide_tr = traces.trace_pair(pair, (x,))
    torch.manual_seed(3)  # the same draw of g
    t = traces.terms(pair, (x,))
    total_q = guide_tr.nodes["g"]["log_prob"]
    assert torch.allclose(t["log_q"], total_q.expand(4) / 4)
    assert torch.allclose(t["log_q"].sum(), total_q)


def test_codes_reconstructions_decoding_and_generation():
    x = torch.rand(6, D)
    pair = linear_pair(x)
    with pair.scope():
        w, a = pyro.param("w"), pyro.param("a")
    codes = traces.codes(pair, (x,))
    assert torch.allclose(codes, x @ a)  # the guide's mean
    assert torch.allclose(traces.reconstruct(pair, (x,)), codes @ w, atol=1e-6)
    z = torch.randn(6, Z)
    assert torch.allclose(traces.decode(pair, z, (x,)), z @ w, atol=1e-6)
    assert torch.equal(traces.flatten_codes(pair, traces.split_codes(pair, z), 6), z)
    assert traces.generate(pair, (x,)).shape == (6, D)
    hier = Programs(hierarchical_model, hierarchical_guide, x)
    assert hier.latent_sizes == (Z, Z) and traces.codes(hier, (x,)).shape == (6, 2 * Z)


def counted(fn, calls: Counter, key: str):
    """``fn`` that counts its runs in ``calls[key]``."""

    def wrapped(x):
        calls[key] += 1
        return fn(x)

    return wrapped


def point_mass_guide(x):
    a = pyro.param("a", torch.zeros(D, Z))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Delta(x @ a).to_event(1))


def old_measure(pair, args):
    """What evaluation ran before :func:`traces.measure`: terms, codes, reconstruction."""
    return traces.terms(pair, args), traces.codes(pair, args), traces.reconstruct(pair, args)


def assert_same_measures(new, old):
    (t_new, z_new, r_new), (t_old, z_old, r_old) = new, old
    assert t_new.keys() == t_old.keys()
    for key, value in t_old.items():
        assert (t_new[key] is None) if value is None else torch.equal(t_new[key], value), key
    assert torch.equal(z_new, z_old) and torch.equal(r_new, r_old)


@pytest.mark.parametrize(
    "guide, runs",
    [(fn_guide, (1, 2)), (point_mass_guide, (1, 1)), (hierarchical_guide, (3, 2))],
)
def test_measure_runs_the_programs_less_and_gives_the_same_numbers(guide, runs):
    """A guide whose means no draw can move (one site; point masses): its codes come off
    the terms' trace, the reconstruction from one more model run (or none: a point mass
    already ran the model at its codes). A hierarchical guide runs all five, in order."""
    model = hierarchical_model if guide is hierarchical_guide else fn_model
    calls = Counter()
    x = torch.rand(6, D)
    pair = Programs(counted(model, calls, "model"), counted(guide, calls, "guide"), x)
    with pair.scope():
        pyro.param("a").data.normal_()
    calls.clear()
    torch.manual_seed(1)
    new = traces.measure(pair, (x,))
    assert (calls["guide"], calls["model"]) == runs
    torch.manual_seed(1)
    assert_same_measures(new, old_measure(pair, (x,)))


@pytest.mark.parametrize("name", registry.names())
def test_measure_agrees_with_terms_codes_and_reconstruct_on_the_suite(name, digits):
    model, guide = registry.build(name, x_dim=digits.x_dim)
    x, y = digits.x_test[:40], digits.y_test[:40]
    pair = Programs(model, guide, (x, y))
    args = pair.args(x, y)
    pair.eval()
    torch.manual_seed(2)
    new = traces.measure(pair, args)
    torch.manual_seed(2)
    assert_same_measures(new, old_measure(pair, args))


# -- what a user's process sees: no global settings changed, no stray packages -----------------


def python(code: str, cwd: Path = ROOT, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *flags, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_image_grids_do_not_import_torchvision(tmp_path):
    """torchvision's import loads torch._dynamo (seconds): figures draw grids without it."""
    r = python(
        f"""
        import sys, torch
        from ppl_vae.figures import images as plots
        x = torch.rand(4, 64)
        plots.image_grid(x, (8, 8), r"{tmp_path}/g.png")
        plots.labelled_rows([x, x], ["a", "b"], (8, 8), r"{tmp_path}/r.png")
        assert "torchvision" not in sys.modules
        """
    )
    assert r.returncode == 0, r.stderr[-3000:]


def test_import_and_plotting_change_no_global_setting_of_pyro_or_matplotlib(tmp_path):
    r = python(
        f"""
        import matplotlib, pyro, torch
        matplotlib.use("svg")  # a user's own choice of backend must survive
        before = (pyro.settings.get("module_local_params"), matplotlib.get_backend())
        import ppl_vae, ppl_vae.infer.trainer, ppl_vae.runs.train, ppl_vae.cli
        from ppl_vae.figures import curves
        from ppl_vae.figures import latent as latent_plots
        from ppl_vae.figures import images as plots
        after_import = (pyro.settings.get("module_local_params"), matplotlib.get_backend())
        curves.training_curves([{{"epoch": 1, "test_elbo": -3.0}}], r"{tmp_path}/c.png")
        latent_plots.latent_scatter(torch.randn(20, 2), r"{tmp_path}/s.png")
        x = torch.rand(3, 64)
        plots.labelled_rows([x, x], ["a", "b"], (8, 8), r"{tmp_path}/r.png")
        after_plots = (pyro.settings.get("module_local_params"), matplotlib.get_backend())
        print(before, after_import, after_plots)
        assert before == after_import == after_plots, (before, after_import, after_plots)
        """
    )
    assert r.returncode == 0, r.stderr[-3000:]


def test_no_top_level_models_package_is_importable_from_outside_the_repository(tmp_path):
    r = python(
        """
        import importlib.util
        assert importlib.util.find_spec("models") is None, importlib.util.find_spec("models")
        import ppl_vae.models.vae
        assert importlib.util.find_spec("models") is None
        """,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]


HEAVY = ("arviz", "matplotlib", "torchvision")


def heavy_imports(stderr: str) -> set[str]:
    """The heavy top-level packages in ``python -X importtime`` output."""
    found = set()
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)", line)
        if m and m.group(1).split(".")[0] in HEAVY:
            found.add(m.group(1).split(".")[0])
    return found


def test_help_imports_no_arviz_matplotlib_or_torchvision(tmp_path):
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ppl_vae", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and "usage" in r.stdout
    assert "import time:" in r.stderr
    assert heavy_imports(r.stderr) == set()


def test_programs_with_batch_norm_never_run_under_a_particle_plate():
    """BatchNorm1d reads (particles, batch, features) as (N, C, L): with a batch as large
    as its features the fast path would run without error and normalise example j with
    feature j's statistics (ProdLDA, 100 words, a test batch of 100). Such programs are
    measured one draw at a time."""

    class Normed(TutorialVAE):
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm1d(2)

    normed, vae, x = Normed(), TutorialVAE(), toy_data().x_train[:2]
    pair, plain = Programs(normed.model, normed.guide, x), Programs(vae.model, vae.guide, x)
    called = []
    assert pair.vectorized("k", lambda: called.append("fast"), lambda: "slow") == "slow"
    assert called == [] and pair._vectorizes["k"] is False
    assert plain.vectorized("k", lambda: "fast", lambda: "slow") == "fast"


@pytest.mark.parametrize("error", [AssertionError, KeyError, NotImplementedError, TypeError])
def test_the_particle_plate_fallback_takes_any_exception_the_programs_raise(error):
    """AIR asserts on its shapes: an AssertionError escaping the fast path once crashed
    ``analyze``. Whatever the programs raise under the particle plate sends that key to
    the one-draw-at-a-time path."""
    vae = TutorialVAE()
    pair = Programs(vae.model, vae.guide, toy_data().x_train[:2])

    def fast():
        raise error("shape")

    assert pair.vectorized("k", fast, lambda: "slow") == "slow"
    assert pair._vectorizes["k"] is False
