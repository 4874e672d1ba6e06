"""Post-hoc samplers: the library against its oracles, the ``sample`` job end to end.

Oracles: a Gaussian mixture fitted to draws of a known mixture recovers it, and our torch
mixture's log-density is sklearn's ``score_samples`` (the parameter transfer); a MAF beats
one full-covariance Gaussian on held-out draws of a non-Gaussian density whose log-density
is known (a banana: z2 = z1^2 + noise), coming close to it, and the density of its own
samples, pushed through the flow by hand, is what ``log_prob`` returns (invertibility).
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from PIL import Image

from ppl_vae.cli import main
from ppl_vae.infer import samplers
from ppl_vae.runs import samplers as store
from tests.helpers import snapshot


def mixture_draws(n: int, seed: int) -> torch.Tensor:
    """Draws of a known three-component mixture in 3-D."""
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([[-6.0, 0.0, 1.0], [0.0, 6.0, -1.0], [6.0, -3.0, 0.0]])
    k = torch.multinomial(torch.tensor([0.5, 0.3, 0.2]), n, replacement=True, generator=g)
    return means[k] + torch.randn(n, 3, generator=g) * torch.tensor([1.0, 0.5, 2.0])


@pytest.mark.parametrize("covariance", samplers.COVARIANCES)
def test_gmm_is_sklearns_mixture(covariance):
    from sklearn.mixture import GaussianMixture

    train, held_out = mixture_draws(1500, 0), mixture_draws(300, 1).double()
    ours = samplers.fit_gmm(train, components=3, covariance=covariance)
    gm = GaussianMixture(3, covariance_type=covariance, random_state=0).fit(train.double().numpy())
    expected = torch.as_tensor(gm.score_samples(held_out.numpy()))
    torch.testing.assert_close(ours.log_prob(held_out), expected, rtol=1e-9, atol=1e-9)
    if covariance == "full":  # the known mixture recovered
        order = ours.tensors["means"][:, 0].argsort()
        w, mu = ours.tensors["weights"][order], ours.tensors["means"][order]
        torch.testing.assert_close(w, torch.tensor([0.5, 0.3, 0.2]).double(), rtol=0, atol=0.04)
        expected_means = torch.tensor([[-6.0, 0.0, 1.0], [0.0, 6.0, -1.0], [6.0, -3.0, 0.0]])
        torch.testing.assert_close(mu, expected_means.double(), rtol=0, atol=0.25)


def banana(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, generator=g)
    return torch.stack([a, a**2 + 0.5 * torch.randn(n, generator=g)], 1)


def banana_log_density(z: torch.Tensor) -> torch.Tensor:
    normal = torch.distributions.Normal
    return normal(0.0, 1.0).log_prob(z[:, 0]) + normal(z[:, 0] ** 2, 0.5).log_prob(z[:, 1])


def test_maf_beats_a_gaussian_on_non_gaussian_codes():
    train, held_out = banana(1000, 0), banana(1000, 1)
    maf = samplers.fit_maf(train, layers=2, steps=100, lr=1e-2)
    gaussian = samplers.fit_gmm(train, components=1)
    ll_maf, ll_gauss = (
        float(maf.log_prob(held_out).mean()),
        float(gaussian.log_prob(held_out).mean()),
    )
    truth = float(banana_log_density(held_out).mean())
    assert ll_maf > ll_gauss + 0.8  # measured: -2.16 against -3.31
    assert truth - 0.2 < ll_maf < truth + 0.1  # the truth: -2.15


def test_maf_samples_have_the_density_log_prob_gives():
    maf = samplers.fit_maf(banana(500, 0), steps=20)
    d = maf.distribution()
    torch.manual_seed(0)
    eps = d.base_dist.sample([200])
    z, log_q = eps, d.base_dist.log_prob(eps)
    for t in d.transforms:  # the sampling direction, by hand
        y = t(z)
        log_q, z = log_q - t.log_abs_det_jacobian(z, y), y
    torch.testing.assert_close(maf.log_prob(z.detach().clone()), log_q, rtol=1e-4, atol=1e-4)


#: vq-vae: a masked prior fitted after each epoch (``refit_after_epoch``), so ``prior`` works.
MODELS = ("ae", "rae", "pca", "vq-vae", "vae")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_run):
    """One tiny run per model trained from the CLI on digits (the VAE: conftest's)."""
    root = tmp_path_factory.mktemp("sampler-runs")
    shutil.copytree(tiny_run, root / "vae")
    for name in MODELS[:-1]:
        args = ["train", name, "--epochs", "1", "--no-progress"]
        args += [] if name == "pca" else ["--hidden", "32"]
        assert main([*args, "--out", str(root / name)]) == 0
    return root


@pytest.fixture(autouse=True)
def short_flow(monkeypatch):
    monkeypatch.setattr(store, "MAF_STEPS", 30)


def sample(run, png, *extra):
    return main(["sample", str(run), "-n", "9", "--out", str(png), *extra])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kind", samplers.KINDS)
def test_sample_with_each_sampler(runs, name, kind, tmp_path, capsys):
    run, png = runs / name, tmp_path / "s.png"
    before = snapshot(run)
    if kind == "prior" and name in ("ae", "pca"):  # no prior: refused, nothing written
        assert sample(run, png, "--sampler", kind) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "--sampler gmm" in err and "no prior" in err
        assert not png.exists() and snapshot(run) == before
        return
    capsys.readouterr()
    assert sample(run, png, "--sampler", kind) == 0
    first = capsys.readouterr().out
    with Image.open(png) as img:
        assert img.size == (3 * 34 + 2, 3 * 34 + 2)  # 3x3 grid of 32x32 cells, 2-pixel gutters
    if kind == "prior" and name == "vq-vae":  # its prior is masked: no density to report
        assert "log-density" not in first and snapshot(run) == before
        return
    density = float(first.split("mean log-density ")[1].split()[0])
    assert math.isfinite(density)
    if kind == "prior":
        assert snapshot(run) == before  # nothing fitted, nothing written
        return
    record = json.loads((run / f"samplers/{kind}.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())["files"]
    assert {f"samplers/{kind}.json", f"samplers/{kind}.safetensors"} <= set(manifest)
    assert record["train_codes"] == 1437
    assert abs(record["test_code_log_density"] - density) < 1e-3
    assert "fitted to the training codes" in first
    again = tmp_path / "again.png"
    assert sample(run, again, "--sampler", kind) == 0  # reused: the same draws
    assert "reused" in capsys.readouterr().out and again.read_bytes() == png.read_bytes()


@pytest.mark.parametrize("tamper", ["tensors", "record", "settings"])
def test_a_tampered_sampler_is_refused_in_one_line(runs, tamper, tmp_path, capsys):
    run, png = runs / "rae", tmp_path / "s.png"
    assert sample(run, png, "--sampler", "gmm") == 0
    weights, record = run / "samplers/gmm.safetensors", run / "samplers/gmm.json"
    if tamper == "tensors":
        data = bytearray(weights.read_bytes())
        data[-3] ^= 1
        weights.write_bytes(bytes(data))
    elif tamper == "record":
        record.write_text('{"kind": "gmm", "weights": "../../etc/passwd"}')
    else:
        body = json.loads(record.read_text())
        body["settings"]["dim"] = "x"
        body["weights"] = "samplers/other.safetensors"
        record.write_text(json.dumps(body))
    before, out = snapshot(run), tmp_path / "t.png"
    capsys.readouterr()
    assert sample(run, out, "--sampler", "gmm") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "--refit" in err
    assert not out.exists() and snapshot(run) == before
    assert sample(run, out, "--sampler", "gmm", "--refit") == 0  # fitted again, replaced
    assert sample(run, tmp_path / "u.png", "--sampler", "gmm") == 0


def test_sampler_from_python(runs, tmp_path):
    from ppl_vae.runs.sample import sample_run

    out, info = sample_run(runs / "vae", 4, tmp_path / "v.png", sampler="maf", refit=True)
    assert out.is_file() and info["fitted"] and info["sampler"] == "maf"


def test_a_saved_sampler_serves_only_its_checkpoint_and_settings():
    record = {"step": 5, "settings": {"dim": 2, "components": 10, "covariance": "full", "seed": 0}}
    assert store.reusable(record, store.requested("gmm", 10, "full"), 5)
    assert not store.reusable(record, store.requested("gmm", 10, "full"), 6)  # trained on
    assert not store.reusable(record, store.requested("gmm", 4, "full"), 5)
    assert not store.reusable(record, store.requested("gmm", 10, "diag"), 5)
