"""Training until converged: the validation split, early stopping with patience and the best
weights restored, the tolerance of full-batch deterministic losses, full-batch L-BFGS (its
refusals, its exact resume), resuming them exactly; pca's defaults against scikit-learn on
data and splits the suite never tuned on."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SkPCA

from ppl_vae import registry
from ppl_vae.cli import main
from ppl_vae.data.dataset import VALIDATION_FRACTION, Dataset, validation_split
from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.recommend import recommended_config
from ppl_vae.infer.stopping import StopReason
from ppl_vae.infer.trainer import fit
from ppl_vae.measure.metrics import TEST_DRAWS, evaluate
from ppl_vae.runs import checkpoint
from ppl_vae.runs.config import RunConfig
from ppl_vae.runs.train import train_run


def low_rank(seed: int, n: int = 400, width: int = 12, rank: int = 3) -> np.ndarray:
    """Rows near a ``rank``-dimensional subspace, with a spread of eigenvalues."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(rank, width)) * np.linspace(3, 1, rank)[:, None]
    return rng.normal(size=(n, rank)) @ basis + 0.3 * rng.normal(size=(n, width)) + 2.0


def test_the_validation_split_is_fixed_and_leaves_the_test_set_alone():
    x = torch.arange(200.0).reshape(100, 2)
    ds = Dataset("toy", x, -x[:7], y_train=torch.arange(100))
    rest, (x_val, y_val) = validation_split(ds)
    again, (x_val2, _) = validation_split(ds)
    assert x_val.shape[0] == round(100 * VALIDATION_FRACTION) and torch.equal(x_val, x_val2)
    assert rest.x_train.shape[0] + x_val.shape[0] == 100
    assert torch.equal(rest.x_test, ds.x_test)
    kept = set(rest.y_train.tolist())
    assert kept.isdisjoint(y_val.tolist()) and kept | set(y_val.tolist()) == set(range(100))
    assert torch.equal(x_val[:, 0] / 2, y_val.float())  # rows keep their labels
    with pytest.raises(UserError):
        validation_split(Dataset("one", x[:1], x[:1]))


def vae_run(tmp_path, **train) -> RunConfig:
    cfg = TrainConfig(progress=False, device="cpu", early_stopping=True, **train)
    return RunConfig(model="vae", model_args={"latent_dim": 2, "hidden": [16]}, train=cfg)


def test_early_stopping_stops_on_the_validation_elbo_and_restores_the_best(tmp_path):
    # A large lr overfits the digits fast; patience 1 stops at the first epoch without gain.
    job = train_run(vae_run(tmp_path, epochs=30, patience=1, lr=0.02), out=tmp_path / "r")
    history = job.metrics["history"]
    last = history[-1]
    assert last["stopped"] == "no improvement for 1 epochs"
    assert len(history) < 30 and all(r["stopped"] is None for r in history[:-1])
    best = last["best_epoch"]
    values = [r["val_elbo"] for r in history]
    assert values[best - 1] == max(values) and len(history) - best == 1
    # The run presents the best epoch's weights and figures, and says why it stopped.
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["stopped"] == last["stopped"] and saved["best_epoch"] == best
    assert saved["train_elbo"] == history[best - 1]["train_elbo"]
    again = evaluate(job.pair, job.dataset.x_test, seed=0, draws=TEST_DRAWS)["elbo"]
    assert saved["test_elbo"] == again  # the best weights, TEST_DRAWS draws per example
    x_val = validation_split(job.dataset)[1][0]
    assert evaluate(job.pair, x_val, seed=0)["elbo"] == pytest.approx(values[best - 1])


def test_an_early_stopped_run_resumes_exactly(tmp_path):
    straight = train_run(vae_run(tmp_path, epochs=6, patience=2, lr=0.02), out=tmp_path / "a")
    train_run(vae_run(tmp_path, epochs=2, patience=2, lr=0.02), out=tmp_path / "b")
    resumed = train_run(
        vae_run(tmp_path, epochs=6, patience=2, lr=0.02), out=tmp_path / "b", resume=True
    )
    assert resumed.metrics["history"] == straight.metrics["history"]
    for key in ("test_elbo", "stopped", "best_epoch"):
        assert resumed.metrics[key] == straight.metrics[key]
    for a, b in zip(straight.pair.parameters(), resumed.pair.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "bad",
    [
        {"patience": 0},
        {"tolerance": -1e-3},
        {"early_stopping": 1},
        {"grad_tolerance": -1e-3},
        {"grad_tolerance": 2.0},
        {"optimizer": "nadam"},
        # L-BFGS needs one objective for the whole run: no schedule, no per-step settings.
        {"optimizer": "lbfgs", "objective": "capacity"},
        {"optimizer": "lbfgs", "objective": "tcvae"},
        {"optimizer": "lbfgs", "beta_schedule": "linear"},
        {"optimizer": "lbfgs", "lr_schedule": "cosine"},
    ],
)
def test_stopping_options_are_checked(bad):
    with pytest.raises(UserError):
        TrainConfig(**bad).validate()


@pytest.mark.parametrize(
    "args, expect",
    [
        (["vae", "--optimizer", "lbfgs"], "needs full-batch training"),
        (["pca", "--optimizer", "lbfgs", "--batch-size", "64"], "needs full-batch training"),
        (["vae", "--grad-tolerance", "1e-3"], "needs full-batch training"),
        (
            ["vae", "--optimizer", "lbfgs", "--batch-size", "65536", "--binarize", "dynamic"],
            "dynamic",
        ),
        (
            ["vae", "--optimizer", "lbfgs", "--batch-size", "65536", "--beta-schedule", "linear"],
            "stays the same",
        ),
        (["ppca", "--lr-schedule", "cosine"], "--lr-schedule cosine is for adam"),
    ],
)
def test_lbfgs_off_its_ground_is_one_error_line_and_writes_nothing(tmp_path, capsys, args, expect):
    out = tmp_path / "run"
    assert main(["train", *args, "--out", str(out), "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize("name", ["pca", "ppca"])
def test_a_batch_size_you_choose_makes_the_recommended_lbfgs_yield_to_adam(tmp_path, name):
    """Their defaults are full-batch L-BFGS; ``--batch-size 64`` (no ``--optimizer``) trains
    them with Adam at Adam's learning rate, without the gradient test, not an error; the
    Python API's ``recommended_config`` does the same."""
    from ppl_vae.infer.recommend import recommended_config
    from ppl_vae.registry import build

    out = tmp_path / "run"
    argv = ["train", name, "--batch-size", "64", "--epochs", "1", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    train = json.loads((out / "config.json").read_text())["train"]
    assert (train["optimizer"], train["lr"], train["grad_tolerance"]) == ("adam", 1e-3, 0.0)
    assert train["batch_size"] == 64
    model, guide = build(name, x_dim=4)
    assert recommended_config(model, guide, batch_size=64).optimizer == "adam"
    assert recommended_config(model, guide).optimizer == "lbfgs"
    explicit = recommended_config(model, guide, batch_size=64, optimizer="lbfgs")
    assert (explicit.optimizer, explicit.lr) == ("lbfgs", 1.0)


class DirCheckpointer:
    """:func:`fit`'s checkpoints in a folder, through the run layer's safetensors + JSON."""

    def __init__(self, path, resume: bool = False):
        self.path, self.resume = path, resume

    def restore(self, map_location):
        return checkpoint.load(self.path, map_location) if self.resume else None

    def save(self, record):
        checkpoint.save(self.path, record)


@pytest.mark.parametrize("name", ["pca", "ppca"])
def test_an_lbfgs_run_resumes_exactly(tmp_path, name):
    """Their defaults (full-batch L-BFGS; ppca's draws fixed for the run and its gradient
    test on, pca's off so that it trains 4 epochs): 2 epochs and a resume to 4 give the
    weights and history (``grad_norm`` included) of 4 straight, the optimizer's curvature
    pairs kept as tensors in safetensors, its settings in JSON."""
    x = torch.from_numpy(low_rank(21, n=300, width=10, rank=3).astype(np.float32))
    ds = Dataset("mine", x[60:], x[:60])
    off = {"grad_tolerance": 0.0} if name == "pca" else {}

    def run(epochs: int, folder: str, resume: bool = False):
        torch.manual_seed(0)  # the same initial weights in each run
        model, guide = registry.build(name, x_dim=10, latent_dim=2)
        settings = dict(epochs=epochs, seed=4, progress=False, device="cpu")
        cfg = recommended_config(model, guide, **settings, **off)
        return fit(model, guide, ds, cfg, DirCheckpointer(tmp_path / folder, resume))

    straight = run(4, "a")
    assert straight.config.optimizer == "lbfgs" and len(straight.history) == 4
    assert ("grad_norm" in straight.history[-1]) == (name == "ppca")
    run(2, "b")
    body = json.loads((tmp_path / "b" / checkpoint.RECORD).read_text())
    lbfgs = body["record"]["optimizer"]
    assert lbfgs["param_groups"][0]["line_search_fn"] == "strong_wolfe"
    state = dict(lbfgs["state"]["__items__"])[0]
    assert state["old_dirs"] and all(set(t) == {"__tensor__"} for t in state["old_dirs"])
    resumed = run(4, "b", resume=True)
    for r, s in zip(resumed.history, straight.history, strict=True):
        assert r == s, {k: (r[k], s.get(k)) for k in r if r[k] != s.get(k)}
    for a, b in zip(straight.pair.parameters(), resumed.pair.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("seed,rank", [(11, 2), (12, 3), (13, 4)])
def test_pca_with_no_flag_matches_sklearn_on_unseen_data(tmp_path, monkeypatch, seed, rank):
    """`ppl-vae train pca --latent-dim d --data mine.npz` from a fresh folder: the test error
    within 0.5% of scikit-learn's PCA, on data and splits no default was tuned on."""
    x = low_rank(seed, rank=rank + 1).astype(np.float32)
    perm = np.random.default_rng(seed).permutation(len(x))
    x_train, x_test = x[perm[:300]], x[perm[300:]]
    monkeypatch.chdir(tmp_path)
    np.savez("mine.npz", x_train=x_train, x_test=x_test)
    args = ["train", "pca", "--data", "mine.npz", "--latent-dim", str(rank), "--seed", str(seed)]
    assert main([*args, "--out", "run", "--no-progress"]) == 0
    metrics = json.loads(open(os.path.join("run", "metrics.json")).read())
    sk = SkPCA(n_components=rank).fit(x_train)
    sk_mse = float(((sk.inverse_transform(sk.transform(x_test)) - x_test) ** 2).sum(1).mean())
    assert metrics["test_recon_mse"] == pytest.approx(sk_mse, rel=0.005)
    assert metrics["stopped"] == "converged"  # converged, not out of epochs


def test_stop_reasons_are_the_strings_metrics_json_has_always_held():
    """The enum's records are plain strings, the ones earlier runs wrote (a resumed old run
    and a new one compare equal); only "epochs reached" lets a resume with more epochs
    train on."""
    assert [r.text(patience=3) for r in StopReason] == [
        "epochs reached",
        "converged",
        "no improvement for 3 epochs",
    ]
    assert type(StopReason.CONVERGED.text()) is str
    assert json.dumps({"stopped": StopReason.CONVERGED}) == '{"stopped": "converged"}'
    ends = [StopReason.ends_training(s) for s in (None, "epochs reached", "converged")]
    assert ends == [False, False, True]
    assert StopReason.ends_training("no improvement for 3 epochs")
