"""The traced loss (ppl_vae/infer/jit.py): the programs' values and gradients, the same random
stream, and a program whose trace would be wrong runs eagerly instead. (No test asserts a
speed; ``ppl-vae bench --ablate jit`` measures it.)"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from helpers import DATA_DEPENDENT_PROGRAM
from ppl_vae.models.vae import VAE
from torch import nn

from ppl_vae import data
from ppl_vae.errors import UserError
from ppl_vae.infer import trainer as train
from ppl_vae.infer.elbo import make_elbo
from ppl_vae.infer.objective import Objective
from ppl_vae.programs import Programs, from_object

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def tutorial_vae(x_dim: int):
    spec = importlib.util.spec_from_file_location("tutorial_vae", EXAMPLES / "tutorial_vae.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VAE(x_dim=x_dim, z_dim=2, hidden_dim=16)


def loss_and_grads(loss_fn: Objective, args: tuple, beta: float, seed: int):
    pyro.set_rng_seed(seed)
    loss = loss_fn(*args, beta=beta)
    grads = torch.autograd.grad(loss, list(loss_fn.pair.parameters()), allow_unused=True)
    return loss.detach(), grads


def programs(kind: str, x: torch.Tensor) -> Programs:
    if kind == "tutorial":  # pyro.module inside a plain nn.Module, as Pyro's tutorial
        vae = tutorial_vae(x.shape[1])
        return Programs(vae.model, vae.guide, (x[:2],))
    return from_object(VAE(x.shape[1], latent_dim=3, hidden=(16,)), x[:2])


@pytest.mark.parametrize(
    "kind, elbo, particles, beta",
    [
        ("suite", "trace", 1, 1.0),
        ("suite", "trace", 1, 0.3),
        ("suite", "trace", 4, 1.0),  # vectorised particles
        ("suite", "meanfield", 1, 2.0),
        ("tutorial", "trace", 1, 0.5),
    ],
)
def test_the_trace_gives_the_programs_loss_and_gradients(digits, kind, elbo, particles, beta):
    x = digits.x_train[:24]
    pair = programs(kind, x)
    eager = Objective(pair, make_elbo(elbo, particles))
    traced = Objective(pair, make_elbo(elbo, particles), jit=True)
    with pair.scope():
        for i in range(2):  # record on one batch, check on another
            traced(x.roll(5 * i, 0), beta=beta)
        assert traced.traced.reason is None and len(traced.traced.checked) == 1
        for seed in (0, 1):  # fresh draws each call, the same draws as the programs'
            ours = loss_and_grads(traced, (x,), beta, seed)
            theirs = loss_and_grads(eager, (x,), beta, seed)
            assert torch.equal(ours[0], theirs[0])  # the same operations, bit for bit
            for a, b in zip(ours[1], theirs[1]):
                assert (a is None and b is None) or torch.equal(a, b)
        first, second = (loss_and_grads(traced, (x,), beta, s)[0] for s in (0, 1))
        assert first != second  # the noise is drawn afresh, not frozen in the trace


def test_an_elbo_that_freezes_a_value_runs_eagerly(digits):
    """Pyro's own TraceMeanField_ELBO returns ``loss + (surrogate - float(surrogate))``: the
    float is a constant in a trace, which the check sees on the next batch."""
    x = digits.x_train[:24]
    pair = programs("suite", x)
    traced = Objective(pair, pyro.infer.TraceMeanField_ELBO(max_plate_nesting=1), jit=True)
    with pair.scope():
        for i in range(2):
            traced(x.roll(5 * i, 0))
    assert "gives the loss" in traced.traced.reason and not traced.traced.checked


def test_a_new_batch_shape_gets_its_own_checked_trace(digits):
    x = digits.x_train[:30]
    pair = programs("suite", x)
    loss_fn = Objective(pair, make_elbo(), jit=True)
    with pair.scope():
        for batch in (x[:10], x[10:20], x[20:30], x[:7], x[7:14]):
            loss_fn(batch)
        loss_fn.eval()  # a program may branch on its mode: eval() gets its own trace
        for batch in (x[:10], x[10:20]):
            loss_fn(batch)
    assert loss_fn.traced.reason is None
    keys = [(key[0][0][0], key[1]) for key in loss_fn.traced.checked]
    assert keys == [((10, 64), True), ((7, 64), True), ((10, 64), False)]


class Branchy(nn.Module):
    """A program whose guide reads a value off the data in Python: its trace freezes the
    branch taken on the batch it saw."""

    def __init__(self):
        super().__init__()
        self.loc = nn.Linear(4, 1)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(self, x):
        wide = 1.0 if float(x.mean()) > 0.5 else 0.1  # data-dependent Python
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc(x).squeeze(-1), wide))


def test_a_program_the_trace_would_get_wrong_runs_eagerly():
    torch.manual_seed(0)
    low, high = torch.rand(8, 4) * 0.5, 0.5 + torch.rand(8, 4) * 0.5
    program = Branchy()
    pair = Programs(program.model, program.guide, (low[:2],))
    traced = Objective(pair, make_elbo(), jit=True)
    eager = Objective(pair, make_elbo())
    with pair.scope():
        traced(low)  # the recording sees the guide read x.mean() into Python
        ours = loss_and_grads(traced, (high,), 1.0, 3)
        assert "frozen" in traced.traced.reason and not traced.traced.checked
        theirs = loss_and_grads(eager, (high,), 1.0, 3)
        torch.testing.assert_close(ours[0], theirs[0])
        again = [loss_and_grads(f, (low,), 1.0, 4)[0] for f in (traced, eager)]
        assert again[0] == again[1]  # eager from now on


def test_fit_traces_by_default_and_reports_how_the_loss_ran(digits):
    def run(**kw):
        vae = VAE(digits.x_dim, latent_dim=2, hidden=(16,))
        cfg = train.TrainConfig(epochs=1, batch_size=64, progress=False, device="cpu", **kw)
        return train.fit(vae.model, vae.guide, digits, cfg).jit

    assert run() == "traced"
    assert run(jit=False) == "off"
    assert run(objective="iwae", num_particles=3) == "traced"
    assert run(objective="capacity").startswith("off: the capacity objective")
    with pytest.raises(UserError, match="jit must be true or false"):
        train.TrainConfig(jit="yes").validate()


def test_traced_and_eager_runs_follow_the_same_trajectory(digits):
    ds = data.apply_binarization(digits, "dynamic")

    def history(jit: bool):
        pyro.set_rng_seed(0)  # the same initial weights
        vae = VAE(ds.x_dim, latent_dim=2, hidden=(32,))
        cfg = train.TrainConfig(
            epochs=2, batch_size=64, progress=False, seed=4, device="cpu", beta=0.7, jit=jit
        )
        result = train.fit(vae.model, vae.guide, ds, cfg)
        assert result.jit == ("traced" if jit else "off")
        return result.history

    assert history(True) == history(False)  # bit for bit


def test_cli_says_when_a_program_ran_eagerly_and_no_jit_turns_tracing_off(tmp_path, capsys):
    from ppl_vae.cli import main

    program = tmp_path / "spread.py"
    program.write_text(DATA_DEPENDENT_PROGRAM)
    common = ["--data", "digits", "--epochs", "1", "--batch-size", "256", "--no-progress"]
    assert main(["train", str(program), *common, "--out", str(tmp_path / "a")]) == 0
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["jit"].startswith("eager: the programs read a tensor's value into Python")
    assert "note: the loss ran eagerly, not traced: the programs read" in capsys.readouterr().err
    assert main(["train", "vae", *common, "--no-jit", "--out", str(tmp_path / "b")]) == 0
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert metrics["jit"] == "off" and config["train"]["jit"] is False
    assert "note:" not in capsys.readouterr().err


class Sequences(nn.Module):
    """A DMM-like program taking x only: rows are sequences of up to ``steps`` vectors,
    zero after each sequence's end, flattened. The loop runs over the steps where some
    sequence of the batch still runs (selected by a boolean mask: a loop length that
    depends on the data), each step masked to the sequences running:
    z_t ~ N(tanh(W z_{t-1}), 0.5^2 I), x_t ~ N(V z_t, I); q(z_t | x_t, z_{t-1}) Gaussian.
    (The guide reads z_{t-1} through a tanh and its scale through a softplus: a run stays
    finite.)"""

    def __init__(self, steps: int = 6, dim: int = 3, latent: int = 2):
        super().__init__()
        self.steps, self.dim, self.latent = steps, dim, latent
        self.trans, self.emit = nn.Linear(latent, latent), nn.Linear(latent, dim)
        self.enc = nn.Linear(dim + latent, 2 * latent)

    def running(self, x):
        seq = x.reshape(x.shape[0], self.steps, self.dim)
        alive = seq.abs().sum(-1) > 0
        used = alive.any(0)
        return seq[:, used], alive[:, used]

    def model(self, x):
        seq, alive = self.running(x)
        z = x.new_zeros(x.shape[0], self.latent)
        with pyro.plate("data", x.shape[0]):
            for t in range(seq.shape[1]):
                with pyro.poutine.mask(mask=alive[:, t]):
                    prior = dist.Normal(torch.tanh(self.trans(z)), 0.5).to_event(1)
                    z = pyro.sample(f"z_{t}", prior)
                    pyro.sample(f"x_{t}", dist.Normal(self.emit(z), 1.0).to_event(1), obs=seq[:, t])

    def guide(self, x):
        seq, alive = self.running(x)
        z = x.new_zeros(x.shape[0], self.latent)
        with pyro.plate("data", x.shape[0]):
            for t in range(seq.shape[1]):
                loc, scale = self.enc(torch.cat([seq[:, t], torch.tanh(z)], -1)).chunk(2, -1)
                scale = nn.functional.softplus(scale) + 1e-3
                with pyro.poutine.mask(mask=alive[:, t]):
                    z = pyro.sample(f"z_{t}", dist.Normal(loc, scale).to_event(1))


def sequences(seed: int, n: int = 96, steps: int = 6, dim: int = 3) -> data.Dataset:
    g = torch.Generator().manual_seed(seed)
    x = 0.5 + torch.rand(n, steps, dim, generator=g)  # never 0 while running
    lengths = torch.randint(1, steps + 1, (n,), generator=g)
    x[torch.arange(steps) >= lengths[:, None]] = 0.0
    x = x.reshape(n, steps * dim)
    return data.Dataset("sequences", x[:64], x[64:])


@pytest.mark.parametrize("seed", range(8))
def test_a_loop_length_that_varies_with_the_batch_trains_as_eagerly(seed):
    """Issue 28: the traced loss crashed mid-training at 3 of 6 seeds of DMM (its loop
    length depends on the batch, the trace was checked on one batch only). The recording
    sees the shape taken from the data, so the run is the eager run, bit for bit."""

    def history(jit: bool):
        pyro.set_rng_seed(seed)
        program = Sequences()
        cfg = train.TrainConfig(
            epochs=3, batch_size=8, progress=False, seed=seed, device="cpu", jit=jit
        )
        result = train.fit(program.model, program.guide, sequences(seed), cfg)
        return result.history, result.jit

    (traced, how), (eager, _) = history(True), history(False)
    assert how.startswith("eager: the programs take a shape from the data (a boolean-mask")
    assert traced == eager


def test_a_replay_that_fails_is_repeated_eagerly_from_the_same_state(digits, monkeypatch):
    """A trace that raises on a later batch (a frozen value the recording did not see):
    that step is taken again eagerly on the same batch from the same random state, and
    the run is the eager run, bit for bit, with the reason in ``jit``."""
    real_trace = torch.jit.trace

    class Flaky:
        def __init__(self, trace):
            self.trace, self.calls = trace, 0

        def __call__(self, *args):
            self.calls += 1
            if self.calls == 4:  # the check's replay, two good replays, then a failure
                torch.rand(5)  # the failed replay drew from the stream before it died
                raise RuntimeError("The following operation failed in the TorchScript interpreter.")
            return self.trace(*args)

    def history(jit: bool):
        pyro.set_rng_seed(0)
        vae = VAE(digits.x_dim, latent_dim=2, hidden=(16,))
        cfg = train.TrainConfig(epochs=2, batch_size=128, progress=False, device="cpu", jit=jit)
        result = train.fit(vae.model, vae.guide, digits, cfg)
        return result.history, result.jit

    monkeypatch.setattr(torch.jit, "trace", lambda *a, **k: Flaky(real_trace(*a, **k)))
    traced, how = history(True)
    monkeypatch.undo()
    eager, _ = history(False)
    assert how.startswith("eager: a trace of the loss failed to replay on a later batch")
    assert "RuntimeError: The following operation failed" in how
    assert traced == eager


def test_compile_also_refuses_a_loop_length_taken_from_the_data(monkeypatch):
    from ppl_vae.infer import compiled as compiled_mod

    monkeypatch.setattr(compiled_mod, "BACKEND", "aot_eager")

    def run(**kw):
        pyro.set_rng_seed(0)
        program = Sequences()
        cfg = train.TrainConfig(epochs=2, batch_size=8, progress=False, device="cpu", **kw)
        return train.fit(program.model, program.guide, sequences(0), cfg)

    compiled, eager = run(compile=True), run(jit=False)
    assert compiled.compile.startswith("fallback: the programs take a shape from the data")
    assert compiled.history == eager.history


class Scaled(nn.Module):
    """``model(x, annealing_factor)``: DMM's KL weight as a plain number argument."""

    def __init__(self):
        super().__init__()
        self.loc = nn.Linear(4, 1)

    def model(self, x, annealing_factor=1.0):
        with pyro.plate("data", x.shape[0]), pyro.poutine.scale(scale=annealing_factor):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data_x", x.shape[0]):
            pyro.sample("x", dist.Normal(z.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(self, x, annealing_factor=1.0):
        with pyro.plate("data", x.shape[0]), pyro.poutine.scale(scale=annealing_factor):
            pyro.sample("z", dist.Normal(self.loc(x).squeeze(-1), 1.0))


@pytest.mark.parametrize("compile", [False, True])
def test_arguments_that_are_not_tensors_run_eagerly_with_a_reason(compile):
    x = torch.rand(8, 4)
    program = Scaled()
    pair = Programs(program.model, program.guide, (x[:2], 0.5))
    traced = Objective(pair, make_elbo(), jit=True, compile=compile)
    eager = Objective(pair, make_elbo())
    with pair.scope():
        for seed in range(3):
            ours = loss_and_grads(traced, (x, 0.5), 1.0, seed)
            theirs = loss_and_grads(eager, (x, 0.5), 1.0, seed)
            assert ours[0] == theirs[0]
    recorder = traced.compiled if compile else traced.traced
    assert recorder.reason == (
        "the programs take arguments that are not tensors (float), which a trace cannot take"
    )


class Sized(nn.Module):
    """``pyro.plate("batch", len(x))``, as Pyro's tutorials write it: a size read back
    into Python, not a value of the data, so the programs are traced."""

    def __init__(self):
        super().__init__()
        self.loc = nn.Linear(4, 1)

    def model(self, x):
        with pyro.plate("batch", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("batch", len(x)):
            pyro.sample("z", dist.Normal(self.loc(x).squeeze(-1), 1.0))


def test_a_size_read_with_len_is_not_data_dependence():
    x = torch.rand(12, 4)
    program = Sized()
    pair = Programs(program.model, program.guide, (x[:2],))
    traced = Objective(pair, make_elbo(), jit=True)
    with pair.scope():
        for i in range(3):
            traced(x[4 * i : 4 * i + 4])
    assert traced.traced.reason is None and len(traced.traced.checked) == 1
