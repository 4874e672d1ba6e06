"""The three programs of issue 9 work end to end, from the command line and from Python:
a Pyro-tutorial VAE (``examples/tutorial_vae.py``), a CEVAE-style pair of ``PyroModule``
programs (``examples/cevae_style.py``) and a two-latent-site hierarchical VAE
(``examples/hierarchical_vae.py``).

Starting the CLI costs seconds of imports, so the commands run as few processes as
possible: each example is trained by the ``ppl-vae`` executable itself (three processes
at once), and the commands that read the runs (``evaluate``, ``sample``, ``report``,
``train --beta 4`` and ``train --resume``) go through ``ppl_vae.cli.main`` -- the same
argument parsing and command code -- in one further process. Each test then checks one
command for every example.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ppl_vae import data
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.trainer import fit
from ppl_vae.programs import Programs

pytestmark = pytest.mark.slow  # one module fixture does the expensive work

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent / "ppl-vae"
Z2 = 3  # the hierarchical example's lower layer in these tests (d1 = 2)
# Tiny networks: each example's own way of being told its width.
OPTIONS = {
    "tutorial_vae": ["--set", "hidden_dim=16"],
    "cevae_style": ["--hidden", "16", "--latent-dim", "2"],
    "hierarchical_vae": ["--hidden", "16", "--latent-dim", "2", "--set", f"z2_dim={Z2}"],
}
NAMES = list(OPTIONS)
LATENT_SITES = {
    "tutorial_vae": ["latent"],
    "cevae_style": ["z"],
    "hierarchical_vae": ["z1", "z2"],
}
LATENT_DIM = {"tutorial_vae": 2, "cevae_style": 2, "hierarchical_vae": 2 + Z2}
IW_TOLERANCE = 0.05  # nats: IW log p(x) with K=1000 may sit this far below the ELBO's estimate

DRIVER = textwrap.dedent(
    """
    import contextlib, io, json, sys, time
    from ppl_vae.cli import main

    out = {}
    for name, argv in json.loads(sys.argv[1]):
        stdout, stderr, start = io.StringIO(), io.StringIO(), time.perf_counter()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                rc = main(argv)
            except SystemExit as exc:
                rc = exc.code
        out[name] = {"rc": rc, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
                     "seconds": time.perf_counter() - start}
    print(json.dumps(out))
    """
)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Train each example with ``ppl-vae train FILE --epochs 2 --out DIR``, then run the
    commands that use the runs; return the run directories and every command's result."""
    root = tmp_path_factory.mktemp("examples")
    runs = {name: root / name for name in NAMES}
    procs = {
        name: subprocess.Popen(
            [str(BIN), "train", str(EXAMPLES / f"{name}.py"), "--epochs", "2"]
            + OPTIONS[name]
            + ["--out", str(runs[name]), "--no-progress"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        for name in NAMES
    }
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        results[f"train/{name}"] = {"rc": proc.returncode, "stdout": stdout, "stderr": stderr}
    commands = []
    for name in NAMES:
        if results[f"train/{name}"]["rc"] != 0:
            continue
        d, beta_dir = str(runs[name]), str(root / f"{name}-beta4")
        file = str(EXAMPLES / f"{name}.py")
        commands += [
            (f"evaluate/{name}", ["evaluate", d, "--iwae-samples", "1000", "--no-progress"]),
            (f"sample/{name}", ["sample", d, "-n", "16", "--out", str(root / f"{name}.png")]),
            (f"report/{name}", ["report", d]),
            (
                f"beta/{name}",
                ["train", file, "--epochs", "1", "--beta", "4", *OPTIONS[name]]
                + ["--out", beta_dir, "--no-progress"],
            ),
            (
                f"resume/{name}",
                ["train", file, "--epochs", "2", "--out", beta_dir, "--resume", "--no-progress"],
            ),
        ]
    r = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env(),
        cwd=root,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    results.update(json.loads(r.stdout.strip().splitlines()[-1]))
    print({k: round(v.get("seconds", -1), 1) for k, v in results.items()})  # -s shows timings
    return root, runs, results


def ok(results: dict, key: str) -> dict:
    res = results.get(key)
    assert res is not None, f"{key} did not run (its training failed)"
    assert res["rc"] == 0, f"{key} failed:\n{res['stdout'][-2000:]}\n{res['stderr'][-3000:]}"
    return res


@pytest.mark.parametrize("name", NAMES)
def test_cli_train(cli_runs, name):
    _, runs, results = cli_runs
    res = ok(results, f"train/{name}")
    assert "test ELBO" in res["stdout"]
    metrics = json.loads((runs[name] / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and len(metrics["history"]) == 2
    assert metrics["latent_sites"] == LATENT_SITES[name]
    assert metrics["latent_dim"] == LATENT_DIM[name]
    # rate and KL per dimension cover every latent site (both of the hierarchical model's)
    assert len(metrics["kl_per_dim"]) == LATENT_DIM[name]
    assert metrics["rate"] == pytest.approx(sum(metrics["kl_per_dim"]), rel=1e-4, abs=1e-4)
    assert metrics["test_elbo"] == pytest.approx(-(metrics["rate"] + metrics["distortion"]))
    assert all(-100 < h["test_elbo"] < 0 for h in metrics["history"])
    for h in metrics["history"]:  # the per-epoch keys the training curves plot
        assert {"train_rate", "train_distortion", "rate", "distortion"} <= set(h)
    figures = {p.name for p in runs[name].glob("*.png")}
    assert {"training_curves.png", "latent_scatter.png", "samples.png"} <= figures
    if len(LATENT_SITES[name]) > 1:  # decoding one code needs one latent site
        assert "latent_manifold.png" not in figures
        skipped = metrics["figures_skipped"]  # ... and the run says so, with the reason
        assert any(n.startswith("latent_manifold.png: decoding a code needs") for n in skipped)
    else:
        assert "latent_manifold.png" in figures and metrics["figures_skipped"] == []


@pytest.mark.parametrize("name", NAMES)
def test_cli_evaluate_iw_log_likelihood_is_at_least_the_elbo(cli_runs, name):
    _, runs, results = cli_runs
    ok(results, f"evaluate/{name}")
    ev = json.loads((runs[name] / "evaluation.json").read_text())
    assert ev["iwae_samples"] == 1000 and ev["examples"] == 360
    assert ev["test_log_likelihood"] >= ev["test_elbo"] - IW_TOLERANCE
    assert len(ev["kl_per_dim"]) == LATENT_DIM[name]


@pytest.mark.parametrize("name", NAMES)
def test_cli_sample(cli_runs, name):
    root, _, results = cli_runs
    ok(results, f"sample/{name}")
    with Image.open(root / f"{name}.png") as im:
        assert im.size == (4 * 34 + 2, 4 * 34 + 2)  # 4 x 4 digits enlarged to 32 pixels
        assert len(set(im.convert("L").getdata())) > 10  # not a blank grid


@pytest.mark.parametrize("name", NAMES)
def test_cli_report(cli_runs, name):
    _, runs, results = cli_runs
    ok(results, f"report/{name}")
    page = (runs[name] / "report.html").read_text()
    assert "training_curves.png" in page or "Training curves" in page
    for site in LATENT_SITES[name]:
        assert site in page


@pytest.mark.parametrize("name", NAMES)
def test_cli_beta_then_resume(cli_runs, name):
    root, runs, results = cli_runs
    ok(results, f"beta/{name}")
    ok(results, f"resume/{name}")
    d = root / f"{name}-beta4"
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["train"]["beta"] == 4 and cfg["train"]["epochs"] == 2
    history = json.loads((d / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]  # the resumed run extended the first
    assert all(h["beta"] == 4 for h in history)
    assert history[1]["step"] == 2 * history[0]["step"]
    # beta = 4 squeezes the rate below the beta = 1 run's after the same first epoch
    plain = json.loads((runs[name] / "metrics.json").read_text())["history"]
    assert history[0]["rate"] < plain[0]["rate"]


# -- from Python ---------------------------------------------------------------------------


def load_example(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(name: str, x_dim: int):
    module = load_example(name)
    if name == "tutorial_vae":
        vae = module.VAE(x_dim=x_dim, z_dim=2, hidden_dim=16)
        return vae.model, vae.guide
    if name == "cevae_style":
        return module.MODEL(x_dim, latent_dim=2, hidden=16)
    hvae = module.HierarchicalVAE(x_dim, latent_dim=2, z2_dim=Z2, hidden=16)
    return hvae.model, hvae.guide


@pytest.fixture(scope="module")
def digits_once():
    return data.load("digits")


@pytest.mark.parametrize("name", NAMES)
def test_python_fit(name, digits_once):
    pyro.set_rng_seed(0)
    model, guide = build(name, digits_once.x_dim)
    pair = Programs(model, guide, digits_once.x_train[:2])
    before = {k: v.detach().clone() for k, v in pair.named_parameters()}
    result = fit(pair, None, digits_once, TrainConfig(epochs=1, progress=False))
    assert result.pair is pair and list(pair.latent_sites) == LATENT_SITES[name]
    assert all(not torch.equal(before[k], v) for k, v in pair.named_parameters())
    last = result.last
    assert -100 < last["test_elbo"] < 0
    assert len(last["kl_per_dim"]) == LATENT_DIM[name]
    if name == "hierarchical_vae":  # both sites carry KL
        assert sum(last["kl_per_dim"][:2]) > 0 and sum(last["kl_per_dim"][2:]) > 0


def test_tutorial_script_main_prints_the_test_elbo(capsys):
    elbo = load_example("tutorial_vae").main(["--epochs", "1", "--hidden-dim", "16"])
    assert -100 < elbo < 0
    assert f"test ELBO {elbo:.3f}" in capsys.readouterr().out


# -- a user's program reaches the suite model's ELBO ----------------------------------------


class SuiteShapedVAE(nn.Module):
    """Tutorial-style program with exactly the network of ``ppl_vae.models.vae.VAE(x_dim,
    latent_dim=2, hidden=(64,))``: the encoder is ``GaussianHead`` (an MLP to loc and a raw
    scale, ``softplus + 1e-4``), the decoder an MLP to Bernoulli logits; the layers are made
    in the same order, so one seed gives both the same initial weights."""

    def __init__(self, x_dim: int, z_dim: int = 2, hidden: int = 64):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = nn.Sequential(
            nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim)
        )
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, x_dim))

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            loc = x.new_zeros(x.shape[0], self.z_dim)
            z = pyro.sample("latent", dist.Normal(loc, torch.ones_like(loc)).to_event(1))
            logits = self.decoder(z)
            pyro.sample(
                "obs", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x
            )

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.encoder(x).chunk(2, dim=-1)
            pyro.sample("latent", dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1))


#: Seed-to-seed spread of the suite VAE's test ELBO after 10 epochs on digits is about
#: 0.3 nats; a user's program run with the same seed and budget must land well within it.
SAME_NETWORK_TOLERANCE = 0.15


def test_user_program_reaches_the_suite_models_test_elbo(digits_once):
    from ppl_vae.models.vae import VAE

    cfg = dict(epochs=10, batch_size=64, lr=3e-3, progress=False, device="cpu", seed=0)
    pyro.set_rng_seed(0)
    suite = VAE(digits_once.x_dim, latent_dim=2, hidden=(64,))
    suite_fit = fit(suite.model, suite.guide, digits_once, TrainConfig(**cfg))
    pyro.set_rng_seed(0)
    user = SuiteShapedVAE(digits_once.x_dim)
    user_fit = fit(user.model, user.guide, digits_once, TrainConfig(**cfg))
    a, b = suite_fit.last["test_elbo"], user_fit.last["test_elbo"]
    assert a > suite_fit.history[0]["test_elbo"]  # both trained
    assert abs(a - b) < SAME_NETWORK_TOLERANCE, (a, b)
