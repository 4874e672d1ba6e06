"""Generation quality: the Fréchet distance against its closed form for Gaussians and
against scipy's ``sqrtm``, improved precision/recall on constructed sets and against
scikit-learn's nearest neighbours, the split-half standard errors against the spread over
independent samples, the feature classifier's cache (round trip, tampered files retrained,
never unpickled), and ``evaluate``/``compare --generation`` from the command line."""

from __future__ import annotations

import csv
import json
import pickle

import numpy as np
import pytest
import scipy.linalg
import torch
from ppl_vae.models.vae import VAE
from sklearn.neighbors import NearestNeighbors

from ppl_vae.cli import main
from ppl_vae.infer import TrainConfig, fit
from ppl_vae.measure import features as feats
from ppl_vae.measure.generation import (
    fd_with_se,
    frechet_distance,
    generation_quality,
    precision_recall,
)
from ppl_vae.runs import features as cache
from ppl_vae.runs.config import RunConfig
from ppl_vae.runs.generation import quality, reference


def gaussian(n: int, mu, cov, seed: int) -> torch.Tensor:
    g = np.random.default_rng(seed)
    return torch.from_numpy(g.multivariate_normal(np.asarray(mu), np.asarray(cov), size=n))


def fd_scipy(a: torch.Tensor, b: torch.Tensor) -> float:
    """The textbook route: scipy's sqrtm of the non-symmetric product, real part."""
    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a.T)), np.atleast_2d(np.cov(b.T))
    cross = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * cross))


def fd_closed(mu_a, s_a, mu_b, s_b) -> float:
    s_a, s_b = np.asarray(s_a, float), np.asarray(s_b, float)
    cross = scipy.linalg.sqrtm(s_a @ s_b).real
    diff = np.asarray(mu_a, float) - np.asarray(mu_b, float)
    return float(diff @ diff + np.trace(s_a + s_b - 2 * cross))


GAUSSIANS = {
    "shifted": ([0, 0], np.eye(2), [1.0, -2.0], np.eye(2)),
    "scaled": ([0, 0, 0], np.eye(3), [0, 0, 0], 4 * np.eye(3)),
    "correlated": ([0.5, 0], [[2.0, 1.2], [1.2, 1.0]], [0, 1.0], [[1.0, -0.4], [-0.4, 0.5]]),
}


@pytest.mark.parametrize("case", list(GAUSSIANS))
def test_fd_of_two_gaussians_samples_is_their_closed_form(case):
    mu_a, s_a, mu_b, s_b = GAUSSIANS[case]
    a, b = gaussian(20000, mu_a, s_a, 1), gaussian(20000, mu_b, s_b, 2)
    fd, se = fd_with_se(a, b)
    exact = fd_closed(mu_a, s_a, mu_b, s_b)
    assert abs(fd - exact) < 4 * se + 0.01, (fd, exact)
    assert se < 0.05 * max(exact, 1.0)  # informative, not a wide net


@pytest.mark.parametrize("rank", [8, 5])  # full rank, and dead features (singular covariance)
def test_fd_eigen_route_agrees_with_scipy_sqrtm_and_is_zero_on_itself(rank):
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(8, 8, generator=g)
    mix[:, rank:] = 0  # the classifier's dead ReLU units: columns that never vary
    a = torch.randn(300, 8, generator=g) @ mix.T
    b = torch.randn(300, 8, generator=g) @ mix.T * 0.7 + 0.3
    assert frechet_distance(a, b) == pytest.approx(fd_scipy(a, b), rel=1e-6, abs=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def clusters(centres: list[int], n: int, seed: int, dim: int = 2) -> torch.Tensor:
    """``n`` points around each listed centre (centres 20 apart on a line), spread 1."""
    g = torch.Generator().manual_seed(seed)
    pts = [
        torch.randn(n, dim, generator=g) + torch.tensor([20.0 * c] + [0.0] * (dim - 1))
        for c in centres
    ]
    return torch.cat(pts)


PR_CASES = {  # real, fake, (precision lo, hi), (recall lo, hi)
    "identical": (clusters([0, 1], 200, 0), None, (1, 1), (1, 1)),
    "disjoint and far": (clusters([0], 200, 0), clusters([5], 200, 1), (0, 0), (0, 0)),
    "mode dropping": (clusters([0, 1, 2, 3, 4], 100, 0), clusters([2], 500, 1), (0.9, 1), (0, 0.3)),
    "same law, new draws": (clusters([0, 1], 300, 0), clusters([0, 1], 300, 1), (0.8, 1), (0.8, 1)),
}


@pytest.mark.parametrize("case", list(PR_CASES))
def test_precision_and_recall_on_constructed_sets(case):
    real, fake, (p_lo, p_hi), (r_lo, r_hi) = PR_CASES[case]
    p, r = precision_recall(real, real if fake is None else fake)
    assert p_lo <= p <= p_hi and r_lo <= r <= r_hi, (p, r)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_and_recall_agree_with_scikit_learn_neighbours(k):
    g = torch.Generator().manual_seed(k)
    real, fake = torch.randn(300, 4, generator=g), 1.2 * torch.randn(250, 4, generator=g) + 0.4

    def covered(points, centres):
        radii = NearestNeighbors(n_neighbors=k + 1).fit(centres).kneighbors(centres)[0][:, k]
        d = np.linalg.norm(points[:, None, :] - centres[None, :, :], axis=2)
        return float((d <= radii[None, :]).any(axis=1).mean())

    p, r = precision_recall(real, fake, k)
    assert p == pytest.approx(covered(fake.numpy(), real.numpy()))
    assert r == pytest.approx(covered(real.numpy(), fake.numpy()))


def test_split_half_standard_errors_match_the_spread_over_independent_samples():
    g = torch.Generator().manual_seed(1)
    values, ses = [], []
    for rep in range(40):
        a, b = torch.randn(150, 4, generator=g), 1.3 * torch.randn(150, 4, generator=g) + 0.5
        q = generation_quality(a, b, seed=rep)
        values.append([q["fd"], q["precision"], q["recall"]])
        ses.append([q["fd_stderr"], q["precision_stderr"], q["recall_stderr"]])
    ratio = torch.tensor(ses).mean(0) / torch.tensor(values).std(0)
    assert ((0.6 < ratio) & (ratio < 1.6)).all(), ratio


# -- the feature classifier and its cache ---------------------------------------------


def tiny_labelled(seed: int = 0):
    """Two classes of 16-dim rows, separable: a classifier trains in a blink."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(160) % 2
    x = torch.rand(160, 16, generator=g) + y[:, None] * torch.linspace(0, 1, 16)
    return x[:120], y[:120], x[120:], y[120:]


def stem_of(folder):
    (json_file,) = folder.glob("features-*.json")
    return json_file, json_file.with_suffix(".safetensors")


def test_classifier_cache_round_trip_is_deterministic_and_learns(tmp_path):
    net, first = cache.feature_network("tiny", *tiny_labelled(), folder=tmp_path)
    again, second = cache.feature_network("tiny", *tiny_labelled(), folder=tmp_path)
    assert (first["cache"], second["cache"]) == ("trained", "hit")
    assert first["test_accuracy"] > 0.9 and second["test_accuracy"] == first["test_accuracy"]
    x = tiny_labelled()[2]
    assert torch.equal(feats.features(net, x), feats.features(again, x))
    record, weights = stem_of(tmp_path)
    saved = json.loads(record.read_text())
    assert saved["fingerprint"] == feats.fingerprint("tiny", list(tiny_labelled()))
    assert saved["code_version"] == feats.CODE_VERSION
    other, third = cache.feature_network("tiny", *tiny_labelled(seed=1), folder=tmp_path)
    assert third["cache"] == "trained" and len(list(tmp_path.glob("*.json"))) == 2  # new data


def flip_a_weight_byte(record, weights):
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))


def garbage_record(record, weights):
    record.write_text("{not json")


def other_data_set(record, weights):
    saved = json.loads(record.read_text())
    record.write_text(json.dumps({**saved, "fingerprint": "0" * 64}))


def pickle_vouched_for(record, weights):
    """A pickle whose hash the record vouches for: refused by safetensors, not unpickled."""
    data = pickle.dumps({"body.0.weight": "boom"})
    weights.write_bytes(data)
    saved = json.loads(record.read_text())
    from ppl_vae.runs.fingerprint import digest

    record.write_text(json.dumps({**saved, "weights_sha256": digest(data)}))


def record_is_a_symlink(record, weights):
    target = record.parent.parent / "elsewhere.json"
    target.write_text(record.read_text())
    record.unlink()
    record.symlink_to(target)


TAMPERS = [
    flip_a_weight_byte,
    garbage_record,
    other_data_set,
    pickle_vouched_for,
    record_is_a_symlink,
]


@pytest.mark.parametrize("tamper", TAMPERS, ids=lambda f: f.__name__)
def test_a_tampered_cache_is_retrained_and_replaced(tmp_path, tamper):
    folder = tmp_path / "cache"
    net, _ = cache.feature_network("tiny", *tiny_labelled(), folder=folder)
    record, weights = stem_of(folder)
    tamper(record, weights)
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    again, info = cache.feature_network("tiny", *tiny_labelled(), folder=folder)
    assert info["cache"] == "trained"
    x = tiny_labelled()[2]
    assert torch.equal(feats.features(net, x), feats.features(again, x))  # deterministic
    assert (
        not record.is_symlink()
        and cache.feature_network("tiny", *tiny_labelled(), folder=folder)[1]["cache"] == "hit"
    )
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # link target


def test_an_unwritable_cache_costs_only_the_reuse(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _, info = cache.feature_network("tiny", *tiny_labelled(), folder=blocker)
    assert info["cache"].startswith("not cached") and cache.CACHE_ENV in info["cache"]
    assert blocker.read_text() == "not a folder"


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "mine"))
    assert cache.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / "ppl-vae"


def test_data_without_labels_gets_a_note_and_no_numbers():
    note = reference(RunConfig(model="ppca", data="synthetic"))
    assert isinstance(note, str) and "no class labels" in note


# -- from the command line ------------------------------------------------------------


@pytest.fixture
def feature_cache():
    """The session's private cache folder (tests/conftest.py): digits' classifier is
    trained once for every command-line case."""
    return cache.cache_dir()


KEYS = ("fd", "fd_stderr", "precision", "precision_stderr", "recall", "recall_stderr")


def test_compare_shows_generation_beside_the_log_likelihood(feature_cache, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--models", "vae,ae", "--epochs", "2", "--latent-dim", "2", "--hidden", "16"]
    assert (
        main([*argv, "--iwae-samples", "5", "--generation", "--no-progress", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "| test log p(x), IW | FD (lower better) | precision | recall |" in printed
    with open(out / "comparison.csv") as fh:
        rows = {r["model"]: r for r in csv.DictReader(fh)}
    for row in rows.values():
        assert all(row[k] != "" for k in KEYS)
        assert 0 <= float(row["precision"]) <= 1 and float(row["fd"]) > 0
    md = (out / "comparison.md").read_text()
    assert "the floor:" in md and "ae: no log p(z) in the ELBO" in md
    assert list(feature_cache.glob("features-*.safetensors"))


def test_evaluate_generation_writes_the_measures_into_evaluation_json(
    feature_cache, run_copy, capsys
):
    assert (
        main(["evaluate", str(run_copy), "--iwae-samples", "5", "--generation", "--no-progress"])
        == 0
    )
    record = json.loads((run_copy / "evaluation.json").read_text())
    assert all(isinstance(record[k], float) for k in KEYS)
    info = record["generation"]
    assert info["samples"] == record["examples"] == 360
    assert info["classifier"]["data"] == "digits" and info["classifier"]["test_accuracy"] > 0.9
    assert 0 < info["fd_floor"] < record["fd"]  # a 3-epoch VAE is not as good as the data
    assert "FD of the data itself (floor)" in capsys.readouterr().out
    assert "Fréchet distance" in (run_copy / "report.html").read_text()  # a headline card


def test_from_python_a_fitted_pair_and_its_data_set(feature_cache, digits):
    vae = VAE(x_dim=digits.x_dim, latent_dim=2, hidden=[16])
    result = fit(vae.model, vae.guide, digits, TrainConfig(epochs=1, progress=False))
    q = quality(result.pair, digits)
    assert all(isinstance(q[k], float) for k in KEYS) and q["generation"]["samples"] == 360
    assert result.pair.training  # left as it was
