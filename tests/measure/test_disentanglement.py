"""Disentanglement metrics on codes whose answer is known, and their formulas by hand.

The constructed codes live on a toy grid of four factors (sizes 3, 6, 8, 8) whose
"images" are the factor classes themselves, so a representation can compute any code
of the factors exactly and cheaply:

* ``copy``: the standardised factor values, one latent per factor: every metric > 0.95.
* ``rotated``: ``copy`` times a random (Haar) rotation: MIG and DCI disentanglement
  < 0.5. The beta-VAE and FactorVAE scores only ask that each factor have its own
  direction of least change, which a rotation often keeps, so they are only required
  not to exceed ``copy`` (this rotation leaves both at 1.0: a known leniency).
* ``mixed``: ``copy`` times a Hadamard rotation (every latent mixes every factor with
  equal weight): all four near their floor, MIG and DCI < 0.05, beta-VAE and FactorVAE
  below 1/K + 0.15 (chance is 1/K = 0.25).
* ``noise``: independent Gaussian codes: MIG < 0.02, DCI < 0.05, beta-VAE and
  FactorVAE below 1/K + 0.15.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ppl_vae.data.dsprites import FactorData, factor_data
from ppl_vae.errors import UserError
from ppl_vae.measure import disentanglement as dis

SIZES = (3, 6, 8, 8)
K = len(SIZES)
VALUES = tuple(np.linspace(0.0, 1.0, s) for s in SIZES)
# Over the module's FAST settings (fast=True: a random forest for DCI), and smaller still,
# to keep the file fast; the defaults are disentanglement_lib's (tested below).
QUICK = {
    "mig": {"num_points": 1500},
    "beta_vae": {"num_train": 300, "num_eval": 200},
    "factor_vae": {"num_variance": 1500, "num_train": 300, "num_eval": 200},
    "dci": {"num_train": 600, "num_test": 300},
}
CHANCE = 1 / K


def toy() -> FactorData:
    return FactorData(
        "toy", ("a", "b", "c", "d"), VALUES, (1, K), lambda c: torch.from_numpy(c * 1.0)
    )


def standardised(x: torch.Tensor) -> torch.Tensor:
    c = x.numpy().astype(np.int64)
    v = np.stack([VALUES[k][c[:, k]] for k in range(K)], axis=1)
    mean = np.array([vals.mean() for vals in VALUES])
    sd = np.array([vals.std() for vals in VALUES])
    return torch.from_numpy((v - mean) / sd)


ROTATION = torch.from_numpy(np.linalg.qr(np.random.default_rng(0).normal(size=(K, K)))[0])
HADAMARD = (
    torch.tensor(
        [[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=torch.float64
    )
    / 2
)


def noise_code():
    g = torch.Generator().manual_seed(0)
    return lambda x: torch.randn(len(x), K, generator=g, dtype=torch.float64)


@pytest.fixture(scope="module")
def scores() -> dict[str, dict]:
    fd = toy()
    codes = {
        "copy": standardised,
        "rotated": lambda x: standardised(x) @ ROTATION,
        "mixed": lambda x: standardised(x) @ HADAMARD,
        "noise": noise_code(),
    }
    return {
        name: dis.evaluate_all(f, fd, seed=0, sizes=QUICK, fast=True) for name, f in codes.items()
    }


METRICS = ("mig", "beta_vae", "factor_vae", "dci_disentanglement")


@pytest.mark.parametrize("metric", METRICS + ("dci_completeness", "dci_informativeness_test"))
def test_a_copy_of_the_factors_scores_near_one(scores, metric):
    assert scores["copy"][metric] > 0.95


def test_a_random_rotation_scores_lower(scores):
    rot, copy_ = scores["rotated"], scores["copy"]
    assert rot["mig"] < 0.5 and rot["dci_disentanglement"] < 0.5
    assert rot["dci_completeness"] < 0.5
    assert rot["beta_vae"] <= copy_["beta_vae"] and rot["factor_vae"] <= copy_["factor_vae"]
    # The rotated code still holds all the information (a rotation is invertible).
    assert rot["dci_informativeness_test"] > 0.75  # chance is about 0.19


def test_an_evenly_mixing_rotation_scores_near_the_floor(scores):
    mixed = scores["mixed"]
    assert mixed["mig"] < 0.05 and mixed["dci_disentanglement"] < 0.05
    assert mixed["beta_vae"] < CHANCE + 0.15 and mixed["factor_vae"] < CHANCE + 0.15


def test_pure_noise_scores_near_zero(scores):
    noise = scores["noise"]
    assert noise["mig"] < 0.02
    assert noise["dci_disentanglement"] < 0.05 and noise["dci_completeness"] < 0.05
    assert noise["beta_vae"] < CHANCE + 0.15 and noise["factor_vae"] < CHANCE + 0.15
    # Noise predicts factors at chance: mean of 1/3, 1/6, 1/8, 1/8 is about 0.19.
    assert noise["dci_informativeness_test"] < 0.3


def test_each_latent_is_labelled_with_its_factor(scores):
    assert [d["factor"] for d in scores["copy"]["latents"]] == ["a", "b", "c", "d"]
    assert all(d["normalized_mi"] > 0.95 and d["active"] for d in scores["copy"]["latents"])


def test_permuted_and_dead_latents():
    perm = [2, 0, 3, 1]

    def code(x):
        z = standardised(x)[:, perm]
        return torch.cat([z, torch.full((len(x), 1), 0.3, dtype=z.dtype)], dim=1)

    fd = toy()
    rec = dis.evaluate_all(code, fd, seed=1, sizes=QUICK, fast=True)
    names = [fd.factor_names[k] for k in perm]
    assert [d["factor"] for d in rec["latents"][:4]] == names
    assert rec["latents"][4]["active"] is False and rec["active_dims"] == [0, 1, 2, 3]
    assert rec["mig"] > 0.95 and rec["factor_vae"] > 0.95 and rec["dci_disentanglement"] > 0.95
    # A constant latent has no importance, so completeness is unaffected by it.
    assert rec["dci_completeness"] > 0.95


def test_deterministic_given_seed():
    fd = toy()
    small = {"mig": {"num_points": 500}, "dci": {"num_train": 300, "num_test": 100}}
    small |= {"beta_vae": {"num_train": 60, "num_eval": 40}}
    small |= {"factor_vae": {"num_variance": 300, "num_train": 60, "num_eval": 40}}
    a = dis.evaluate_all(noise_code(), fd, seed=5, sizes=small, fast=True)
    b = dis.evaluate_all(noise_code(), fd, seed=5, sizes=small, fast=True)
    assert a == b
    assert dis.mig(noise_code(), fd, seed=6, num_points=500)["mig"] != a["mig"]
    with pytest.raises(UserError, match="unknown metric"):
        dis.evaluate_all(noise_code(), fd, sizes={"sap": {}})
    with pytest.raises(UserError, match="unknown setting.*num_pairs"):
        dis.evaluate_all(noise_code(), fd, sizes={"mig": {"num_pairs": 5}})
    with pytest.raises(UserError, match="classifier"):
        dis.dci(noise_code(), fd, classifier="svm", num_train=50, num_test=10)


def test_mig_by_hand():
    # Latent 0 copies factor 0 exactly; latent 1 copies it too: the gap for factor 0 is 0.
    classes = np.array([[0, 0], [1, 0], [2, 1], [0, 1], [1, 1], [2, 0]] * 50)
    both = classes[:, [0, 0]].astype(float)
    rec = dis.mig_from_codes(both, classes, num_bins=3)
    h = np.array([np.log(3), np.log(2)])
    np.testing.assert_allclose(rec["factor_entropy"], h)
    np.testing.assert_allclose(rec["mutual_info"], [[np.log(3), 0.0], [np.log(3), 0.0]], atol=1e-9)
    assert rec["mig"] == pytest.approx(0.0, abs=1e-9)
    # One latent per factor: gaps (log 3 - 0)/log 3 and (log 2 - 0)/log 2, MIG 1.
    rec = dis.mig_from_codes(classes.astype(float), classes, num_bins=3)
    assert rec["mig"] == pytest.approx(1.0)


def test_dci_by_hand():
    eye = dis.dci_from_importance(np.eye(3))
    assert eye["dci_disentanglement"] == pytest.approx(1.0)
    assert eye["dci_completeness"] == pytest.approx(1.0)
    flat = dis.dci_from_importance(np.ones((3, 3)))
    assert flat["dci_disentanglement"] == pytest.approx(0.0, abs=1e-9)
    assert flat["dci_completeness"] == pytest.approx(0.0, abs=1e-9)
    # Two latents, two factors: latent 0 only factor 0 (weight 0.5 of the total),
    # latent 1 splits evenly (disentanglement 0); D = 0.5 * 1 + 0.5 * 0 = 0.5. Factor 1
    # is held by latent 1 alone (completeness 1, weight 0.25).
    r = np.array([[0.5, 0.0], [0.25, 0.25]])
    p0 = np.array([2 / 3, 1 / 3])  # factor 0's importance over latents
    c0 = 1 + (p0 * np.log(p0)).sum() / np.log(2)
    hand = {"dci_disentanglement": 0.5, "dci_completeness": 0.75 * c0 + 0.25 * 1.0}
    got = dis.dci_from_importance(r)
    assert got == pytest.approx(hand, abs=1e-9)


def test_on_dsprites_small_with_a_centroid_code():
    """Rendered images, the --fast settings: a hand-made code (centroid x, centroid y, area)
    captures posX and posY alone and scale best, and scores in between copy and noise."""
    fd = factor_data("dsprites-small")
    grid = torch.arange(32, dtype=torch.float32) + 0.5

    def centroid(x):
        im = x.reshape(-1, 32, 32)
        mass = im.sum((1, 2))
        cx = (im.sum(1) * grid).sum(1) / mass
        cy = (im.sum(2) * grid).sum(1) / mass
        return torch.stack([cx, cy, mass / 100], dim=1)

    rec = dis.evaluate_all(centroid, fd, seed=0, fast=True)
    assert [d["factor"] for d in rec["latents"]] == ["posX", "posY", "scale"]
    assert rec["mig_per_factor"][3] > 0.9 and rec["mig_per_factor"][4] > 0.9
    assert rec["mig_per_factor"][2] < 0.05  # nothing in this code knows the orientation
    assert 0.3 < rec["mig"] < 0.9 and 0.2 < rec["dci_disentanglement"] < 0.9
    assert rec["settings"] == {"dataset": "dsprites-small", **dis.FAST}
    assert rec["reference_settings"] is False


def test_disentangle_cli_writes_the_record_the_figure_and_the_report(tmp_path, capsys, monkeypatch):
    """`ppl-vae train ... --data dsprites-small`, then `ppl-vae disentangle DIR --fast`, and
    without --fast the reference's settings (made small here, to keep the test fast)."""
    from ppl_vae.cli import main

    run = tmp_path / "run"
    argv = ["train", "vae", "--data", "dsprites-small", "--latent-dim", "3", "--hidden", "16"]
    assert (
        main([*argv, "--epochs", "1", "--batch-size", "256", "--no-progress", "--out", str(run)])
        == 0
    )
    capsys.readouterr()
    assert main(["disentangle", str(run), "--fast"]) == 0
    printed = capsys.readouterr().out
    record = json.loads((run / "disentanglement.json").read_text())
    for key in ("mig", "beta_vae", "factor_vae", "dci_disentanglement"):
        assert 0.0 <= record[key] <= 1.0 and key in printed
    assert record["reference_settings"] is False and "not comparable" in printed
    assert record["step"] == json.loads((run / "metrics.json").read_text())["steps"]
    assert record["settings"]["dci"] == {"num_train": 1500, "num_test": 500, "classifier": "forest"}
    small = {m: {**dis.FAST[m], **QUICK[m]} for m in QUICK}
    monkeypatch.setattr(dis, "REFERENCE", small)
    assert main(["disentangle", str(run)]) == 0
    record = json.loads((run / "disentanglement.json").read_text())
    assert record["reference_settings"] is True and record["settings"]["mig"] == small["mig"]
    assert "disentanglement_lib's study settings" in capsys.readouterr().out
    assert len(record["latents"]) == 3 and record["data"] == "dsprites-small"
    assert (run / "disentanglement_traversals.png").stat().st_size > 1000
    page = (run / "report.html").read_text()
    assert "Disentanglement (ppl-vae disentangle)" in page
    # data without known factors: one clear line
    other = tmp_path / "digits"
    assert main(["train", "vae", "--epochs", "1", "--no-progress", "--out", str(other)]) == 0
    capsys.readouterr()
    assert main(["disentangle", str(other)]) == 2
    assert "no known generating factors" in capsys.readouterr().err


# disentanglement_lib/config/unsupervised_study_v1/metric_configs/{beta_vae_sklearn,
# factor_vae_metric,mig,dci}.gin, and dci.py's ensemble.GradientBoostingClassifier().
STUDY = {
    "mig": {"num_points": 10000, "num_bins": 20},
    "beta_vae": {"num_train": 10000, "num_eval": 5000, "batch_size": 64},
    "factor_vae": {
        "num_variance": 10000,
        "num_train": 10000,
        "num_eval": 5000,
        "batch_size": 64,
        "prune_threshold": 0.05,
    },
    "dci": {"num_train": 10000, "num_test": 5000, "classifier": "gbt"},
}


def test_the_defaults_are_disentanglement_libs_study_settings():
    """The metric functions' own defaults and evaluate_all's are the study's; --fast and
    any change of a setting is recorded as not the reference's."""
    import inspect

    assert dis.REFERENCE == STUDY
    functions = {
        "mig": dis.mig,
        "beta_vae": dis.beta_vae_score,
        "factor_vae": dis.factor_vae_score,
        "dci": dis.dci,
    }
    for metric, fn in functions.items():
        params = inspect.signature(fn).parameters
        assert {k: params[k].default for k in STUDY[metric]} == STUDY[metric], metric
    assert dis.settings() == (STUDY, True)
    assert dis.settings({"beta_vae": {"batch_size": 64}}) == (STUDY, True)
    assert dis.settings(fast=True) == (dis.FAST, False)
    chosen, is_reference = dis.settings({"dci": {"classifier": "forest"}})
    assert chosen["dci"]["classifier"] == "forest" and chosen["mig"] == STUDY["mig"]
    assert not is_reference
    for metric in STUDY:  # --fast is smaller everywhere
        for key, value in STUDY[metric].items():
            if key.startswith("num_") and key != "num_bins":
                assert dis.FAST[metric][key] <= value / 3, (metric, key)


@pytest.mark.parametrize("code", ["permuted", "rotated", "noise"])
def test_dci_with_the_references_gradient_boosted_trees(code):
    """DCI as disentanglement_lib computes it (GradientBoostingClassifier) on known-answer
    codes, at small sizes: a permuted copy is fully disentangled, a rotation partly, noise
    not at all; its informativeness sees through the rotation. (The rotation's DCI
    disentanglement is 0.30 here, 0.37 at the study's sizes and 0.15 with --fast's forest;
    measured with seeds 0-2.)"""
    perm = [2, 0, 3, 1]
    represent = {
        "permuted": lambda x: standardised(x)[:, perm],
        "rotated": lambda x: standardised(x) @ ROTATION,
        "noise": noise_code(),
    }[code]
    rec = dis.dci(represent, toy(), seed=0, num_train=600, num_test=300, classifier="gbt")
    low, high = {"permuted": (0.95, 1), "rotated": (0.2, 0.5), "noise": (0, 0.05)}[code]
    assert low <= rec["dci_disentanglement"] <= high
    assert low <= rec["dci_completeness"] <= high
    if code != "noise":
        assert rec["dci_informativeness_test"] > 0.75
    if code == "permuted":  # each factor's importance on its own latent
        assert np.argmax(np.array(rec["dci_importance"]), axis=1).tolist() == perm
