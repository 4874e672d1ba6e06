"""The generic trainer: learning, seed control, checkpoint round-trips and exact resume."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.measure.metrics import EPOCH_DRAWS, FINAL_METRICS, TEST_DRAWS, evaluate
from ppl_vae.runs import checkpoint
from ppl_vae.runs.build import load_run
from ppl_vae.runs.config import RunConfig
from ppl_vae.runs.train import final_metrics, train_run


def config(epochs=2, seed=0, **train) -> RunConfig:
    return RunConfig(
        model="vae",
        model_args={"latent_dim": 2, "hidden": "64"},
        train=TrainConfig(epochs=epochs, seed=seed, progress=False, device="cpu", **train),
    )


def weights(module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_training_improves_the_test_elbo():
    job = train_run(config(epochs=8))
    history = job.metrics["history"]
    assert len(history) == 8 and [h["epoch"] for h in history] == list(range(1, 9))
    assert history[-1]["test_elbo"] > history[0]["test_elbo"] + 2.0
    # metrics.json: the final weights with TEST_DRAWS draws; the curve's last point: one.
    gap = abs(job.metrics["test_elbo"] - history[-1]["test_elbo"])
    assert 0 < gap < 3 * history[-1]["test_elbo_stderr"]
    # ELBO = -(rate + distortion) and every figure is finite.
    last = history[-1]
    assert last["test_elbo"] == pytest.approx(-(last["rate"] + last["distortion"]), rel=1e-6)
    assert sum(last["kl_per_dim"]) == pytest.approx(last["rate"], rel=1e-5)


def test_same_seed_same_result_different_seed_different():
    a, b, c = (train_run(config(seed=s)) for s in (0, 0, 1))
    assert a.metrics["history"] == b.metrics["history"]
    for k, v in weights(a.pair).items():
        assert torch.equal(v, weights(b.pair)[k]), k
    assert a.metrics["history"] != c.metrics["history"]


def test_checkpoint_round_trip_reproduces_the_test_elbo_exactly(tmp_path):
    job = train_run(config(epochs=2), out=tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    pair, ds, cfg = load_run(tmp_path / "run")
    again = evaluate(pair, ds.x_test, seed=cfg.train.seed, draws=TEST_DRAWS)
    assert again["elbo"] == saved["test_elbo"] == job.metrics["test_elbo"]
    assert again["recon_mse"] == saved["test_recon_mse"]
    for k, v in weights(job.pair).items():
        assert torch.equal(v, weights(pair)[k]), k


def test_final_metrics_are_a_fresh_test_evaluation_and_the_last_records_train_figures():
    job = train_run(config(epochs=2))
    last = job.metrics["history"][-1]
    fresh = evaluate(job.pair, job.dataset.x_test, seed=job.config.train.seed, draws=TEST_DRAWS)
    assert last["test_draws"] == EPOCH_DRAWS < TEST_DRAWS == job.metrics["test_draws"]
    assert (fresh["elbo"], fresh["elbo_stderr"]) == (
        job.metrics["test_elbo"],
        job.metrics["test_elbo_stderr"],
    )
    for key in ("rate", "distortion", "kl_per_dim", "active_units"):
        assert fresh[key] == job.metrics[key], key
    assert fresh["recon_mse"] == job.metrics["test_recon_mse"]
    for key in ("train_elbo", "stopped", "best_epoch"):
        assert job.metrics[key] == last[key], key
    # One draw per example in the records: the same weights give the same numbers.
    once = evaluate(job.pair, job.dataset.x_test, seed=job.config.train.seed, draws=EPOCH_DRAWS)
    assert once["elbo"] == last["test_elbo"] != job.metrics["test_elbo"]
    # Without a record of the final weights (none yet, or one from an earlier step) the
    # pair is evaluated again: the same numbers.
    for history in ([], [dict(last, step=last["step"] - 1)]):
        job.fit.history = history
        again = final_metrics(job.fit, job.dataset)
        measured = [k for k in FINAL_METRICS if k not in ("stopped", "best_epoch")]
        assert {k: again[k] for k in measured} == {k: job.metrics[k] for k in measured}


def test_resume_continues_exactly(tmp_path):
    straight = train_run(config(epochs=3), out=tmp_path / "a")
    train_run(config(epochs=2), out=tmp_path / "b")
    resumed = train_run(config(epochs=3), out=tmp_path / "b", resume=True)
    assert resumed.metrics["history"] == straight.metrics["history"]
    for k, v in weights(straight.pair).items():
        assert torch.equal(v, weights(resumed.pair)[k]), k
    # Optimizer moments survive the round trip too.
    state = checkpoint.load(tmp_path / "b")
    assert state["step"] == straight.fit.step and state["epoch"] == 3


def test_an_existing_run_is_never_clobbered(tmp_path):
    out = tmp_path / "run"
    train_run(config(epochs=1), out=out)
    before = (out / "metrics.json").read_text()
    with pytest.raises(UserError, match="--resume.*--overwrite"):
        train_run(config(epochs=1, seed=5), out=out)
    assert (out / "metrics.json").read_text() == before
    with pytest.raises(UserError, match="does not exist; train there without --resume"):
        train_run(config(epochs=1), out=tmp_path / "empty", resume=True)


def test_nan_loss_is_caught():
    with pytest.raises(UserError, match="diverged|loss became"):
        train_run(config(epochs=1, lr=1e30))


@pytest.mark.parametrize("field, value", [("epochs", 0), ("lr", -1.0), ("beta", 0.0)])
def test_bad_training_settings(field, value):
    cfg = config()
    cfg = cfg.replace(train=cfg.train.replace(**{field: value}))
    with pytest.raises(UserError):
        train_run(cfg)


#: A short run's numbers as the flat package of the last round gave them (same seed, same
#: CPU stream): the layout move changed no number; the records' test ELBO is one draw per
#: example (EPOCH_DRAWS; metrics.json's averages TEST_DRAWS), the training objectives are
#: unchanged since then. (step, test ELBO,
#: training objective) per epoch; the tolerance allows another CPU's last-bit rounding.
#: ``elbo`` is the default estimator, ``--elbo auto``, which trains the VAE with the
#: closed-form KL (meanfield) since issue 32; ``elbo-trace`` is the sampled estimator, the
#: default before it, whose numbers are the ones ``elbo`` had.
PINNED = {
    "elbo": [
        (45, -29.159428654693894, 32.90692414752957),
        (90, -27.985616817335703, 28.340925648051496),
    ],
    "elbo-trace": [
        (45, -29.194716308017572, 32.91275226165623),
        (90, -28.049509809994035, 28.39468619519833),
    ],
    "capacity": [
        (45, -28.980401963947546, 36.49435945111343),
        (90, -28.800092360046172, 38.38141527487822),
    ],
    "tcvae": [
        (45, -29.19377281193932, 47.45570198329854),
        (90, -28.050980068582835, 42.93693186760613),
    ],
}


@pytest.mark.parametrize("key", sorted(PINNED))
def test_a_short_run_gives_the_pinned_numbers(key):
    beta = 3.0 if key == "tcvae" else 1.0
    objective, _, elbo = key.partition("-")
    cfg = RunConfig(
        model="vae",
        model_args={"latent_dim": 2} if objective == "elbo" else {},
        train=TrainConfig(
            epochs=2, objective=objective, beta=beta, progress=False, elbo=elbo or "auto"
        ),
    )
    job = train_run(cfg)  # cfg is a frozen value: the job's config is job.config
    metrics = job.metrics
    history = metrics["history"]
    if objective == "elbo":
        assert metrics["elbo"] == (elbo or "meanfield") == job.config.train.elbo
        assert metrics["kl"] == {"z": "analytic" if not elbo else "sampled"}
    else:  # tcvae estimates the KL from draws; capacity's penalty takes the closed form
        kl = "analytic" if objective == "capacity" else "sampled"
        assert metrics["elbo"] == objective and metrics["kl"] == {"z": kl}
    got = [(r["step"], r["test_elbo"], r["train_objective"]) for r in history]
    for (step, value, loss), (s, e, obj) in zip(PINNED[key], got, strict=True):
        assert s == step
        assert e == pytest.approx(value, rel=1e-5) and obj == pytest.approx(loss, rel=1e-5)


def test_init_from_data_sees_the_training_rows_once_and_a_resume_is_exact(tmp_path):
    """A module's ``init_from_data(x)`` gets the rows it trains on (the validation slice held
    out), before the first step; ppca's (centre and scale) leaves a resumed run exact."""
    from ppl_vae.models.ppca import PPCA

    from ppl_vae import data
    from ppl_vae.data.dataset import validation_split
    from ppl_vae.infer.trainer import fit

    ds = data.load("synthetic")
    seen = []
    m = PPCA(ds.x_dim, latent_dim=2)
    m.init_from_data = lambda x: seen.append(x.clone())
    cfg = TrainConfig(epochs=1, batch_size=500, early_stopping=True, progress=False, device="cpu")
    fit(m.model, m.guide, ds, cfg)
    (x,) = seen
    assert torch.equal(x, validation_split(ds)[0].x_train)

    def ppca(epochs: int) -> RunConfig:
        train = TrainConfig(epochs, batch_size=2000, lr=0.1, elbo="meanfield", progress=False)
        return RunConfig(model="ppca", data="synthetic", train=train)

    straight = train_run(ppca(3), out=tmp_path / "a")
    train_run(ppca(2), out=tmp_path / "b")
    resumed = train_run(ppca(3), out=tmp_path / "b", resume=True)
    assert resumed.metrics["history"] == straight.metrics["history"]
    for k, v in weights(straight.pair).items():
        assert torch.equal(v, weights(resumed.pair)[k]), k
    (m,) = resumed.pair.owners
    assert bool(m.data_seen) and torch.equal(m.center, ds.x_train.mean(0))


class Keep:
    """A checkpointer in memory: it keeps a copy of every record ``fit`` saves (a record
    holds the live history and weights, as a checkpointer that writes at once may)."""

    def __init__(self):
        self.records: list[dict] = []

    def restore(self, map_location):
        return None

    def save(self, record):
        self.records.append(copy.deepcopy(record))


def same(a, b) -> bool:
    """Equal values, tensors bit for bit (dtype and shape too); a tuple equals its list."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and (a.dtype, a.shape) == (b.dtype, b.shape)
            and torch.equal(a.cpu(), b.cpu())
        )
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (
            isinstance(b, (list, tuple))
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    return a == b


#: Runs whose checkpoints between them set every field of the trainer's state: mid-epoch
#: ones (position, running loss), early stopping (best, and the last weights kept apart as
#: train_module once the best are put back) and pca's full-batch L-BFGS (grad_start).
STATE_RUNS = {
    "vae": dict(epochs=4, early_stopping=True, patience=1, lr=0.05, checkpoint_every=10),
    "pca": dict(epochs=2),
    "aae": dict(epochs=1, discriminator_hidden=[8], checkpoint_every=20),  # its discriminator
}


def test_every_field_of_the_train_state_survives_a_checkpoint_and_a_restore(tmp_path):
    """Each record ``fit`` saves, written to a run directory and read back, gives the same
    :class:`TrainState` field by field; put back into a fresh fit's objects
    (``trainer.restore``) and taken again (``trainer.snapshot``), the same again. The
    fields come from ``dataclasses.fields``: a field ``to_record``/``from_record`` or the
    restore leaves out fails here, and so does one that no run sets."""
    from dataclasses import fields

    from ppl_vae import data, registry
    from ppl_vae.infer import recommend, trainer
    from ppl_vae.infer.state import TrainState

    names = [f.name for f in fields(TrainState)]
    ds, records = data.load("digits"), []
    for name, settings in STATE_RUNS.items():
        torch.manual_seed(0)
        extra = {"hidden": [16], "latent_dim": 2} if name in ("vae", "aae") else {"latent_dim": 2}
        model, guide = registry.build(name, x_dim=ds.x_dim, **extra)
        cfg = recommend.recommended_config(model, guide, progress=False, device="cpu", **settings)
        keep = Keep()
        trainer.fit(model, guide, ds, cfg, keep)
        loop, result = trainer.start(model, guide, ds, cfg, None, None)  # a fresh fit
        records += [(loop, result, r) for r in keep.records]
    set_somewhere = set()
    for k, (loop, result, record) in enumerate(records):
        saved = TrainState.from_record(record)
        checkpoint.save(tmp_path / str(k), record)
        disk = TrainState.from_record(checkpoint.load(tmp_path / str(k)))
        trainer.restore(result, loop.shuffle, record, loop.device)
        again = trainer.snapshot(result, loop.shuffle.get_state())
        if saved.train_module is not None:  # the pair trains on from the last weights; the
            # ones presented are the best epoch's, which the state keeps in ``best``
            again.train_module, again.module = again.module, again.best["module"]
        for name in names:
            value = getattr(saved, name)
            assert same(getattr(disk, name), value), (k, name, "checkpoint files")
            assert same(getattr(again, name), value), (k, name, "restore")
            default = getattr(TrainState(), name)
            set_somewhere |= {name} if not same(value, default) else set()
    assert set_somewhere == set(names), set(names) - set_somewhere


def test_a_checkpoint_that_does_not_fit_is_one_error_line():
    """A record without a field, or with one of the wrong type, is one line naming the
    exception (an exception without a message by its type)."""
    from ppl_vae.infer.state import TrainState, does_not_fit

    with pytest.raises(UserError, match=r"does not fit this model \(KeyError: 'history'\)"):
        TrainState.from_record({"step": 1, "seconds": 0.0})
    with pytest.raises(UserError, match=r"\(TypeError: .*\); resume with the run's own"):
        TrainState.from_record({"step": 1, "seconds": 0.0, "history": 3})
    assert "(RuntimeError: RuntimeError)" in str(does_not_fit(RuntimeError("")))


class Given(Keep):
    """A checkpointer that resumes from one record."""

    def __init__(self, record):
        super().__init__()
        self.record = record

    def restore(self, map_location):
        return self.record


class NumpyNoise(torch.nn.Module):
    """A Gaussian VAE whose guide widens its scale by draws from NumPy's and Python's global
    generators (a program may draw from any stream ``pyro.set_rng_seed`` seeds)."""

    def __init__(self, x_dim: int):
        super().__init__()
        self.enc, self.dec = torch.nn.Linear(x_dim, 2), torch.nn.Linear(2, x_dim)

    def model(self, x):
        import pyro
        import pyro.distributions as dist

        pyro.module("dec", self.dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), 1.0).to_event(1), obs=x)

    def guide(self, x):
        import random

        import numpy as np
        import pyro
        import pyro.distributions as dist

        pyro.module("enc", self.enc)
        scale = 0.5 + 0.1 * float(np.random.rand()) + 0.1 * random.random()
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.enc(x), scale).to_event(1))


def test_a_mid_epoch_resume_continues_numpys_and_pythons_streams():
    """Resumed from a checkpoint in the middle of its second epoch, a program that draws
    from NumPy's and Python's generators gives the uninterrupted run's history and
    weights: the checkpoint keeps those streams beside torch's and the shuffle's."""
    from ppl_vae import data
    from ppl_vae.infer.trainer import fit

    ds = data.load("synthetic")
    cfg = TrainConfig(epochs=2, checkpoint_every=3, jit=False, progress=False, device="cpu")
    torch.manual_seed(0)
    m, keep = NumpyNoise(ds.x_dim), Keep()
    straight = fit(m.model, m.guide, ds, cfg, keep)
    (middle, *_) = [r for r in keep.records if r["epoch"] == 1 and r["position"] > 0]
    assert set(middle["rng"]) >= {"torch", "shuffle", "python", "numpy"}
    m2 = NumpyNoise(ds.x_dim)
    resumed = fit(m2.model, m2.guide, ds, cfg, Given(middle))
    assert resumed.history == straight.history
    for k, v in weights(straight.pair).items():
        assert torch.equal(v, weights(resumed.pair)[k]), k


def test_a_record_without_pythons_and_numpys_streams_still_resumes_exactly():
    """A checkpoint written before the state kept Python's and NumPy's generators (torch's
    and the shuffle's only) resumes, exactly for a program that draws from torch alone."""
    from ppl_vae import data, registry
    from ppl_vae.infer.trainer import fit

    ds = data.load("digits")
    cfg = TrainConfig(epochs=2, progress=False, device="cpu")
    torch.manual_seed(0)
    model, guide = registry.build("vae", x_dim=ds.x_dim, hidden=[16], latent_dim=2)
    keep = Keep()
    straight = fit(model, guide, ds, cfg, keep)
    old = copy.deepcopy(keep.records[0])
    del old["rng"]["python"], old["rng"]["numpy"]
    model, guide = registry.build("vae", x_dim=ds.x_dim, hidden=[16], latent_dim=2)
    resumed = fit(model, guide, ds, cfg, Given(old))
    assert resumed.history == straight.history
