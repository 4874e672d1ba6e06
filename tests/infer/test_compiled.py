"""``--compile``: the loss recorded as a graph and ``torch.compile``-d gives the programs' loss
and gradients (checked on a batch it was not recorded on, asserted here against the
programs on yet another batch), and a loss that cannot be compiled falls back to the trace
with a reason. Inductor compiles for about a minute on a small CPU, so the fast cases use
``aot_eager`` (the same recording, ``torch.compile`` and AOT autograd, without code
generation) and the Inductor case is ``slow``."""

from __future__ import annotations

import json

import pyro
import pytest
import torch
from helpers import DATA_DEPENDENT_PROGRAM
from ppl_vae.models.vae import VAE

from ppl_vae import data
from ppl_vae.cli import main
from ppl_vae.errors import UserError
from ppl_vae.infer import compiled as compiled_mod
from ppl_vae.infer import trainer as train
from ppl_vae.infer.elbo import make_elbo
from ppl_vae.infer.jit import RTOL
from ppl_vae.infer.objective import Objective
from ppl_vae.programs import from_object


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_loss_and_gradients_are_the_programs(digits, backend):
    x = digits.x_train[:96].bernoulli(generator=torch.Generator().manual_seed(0))
    pair = from_object(VAE(digits.x_dim, latent_dim=3, hidden=(16,)), x[:2])
    loss_fn = Objective(pair, make_elbo(), jit=True, compile=True)
    loss_fn.compiled.backend = backend
    params = list(pair.parameters())
    with pair.scope():
        for i in range(2):  # record, then check against the programs on another batch
            loss_fn(x[32 * i : 32 * (i + 1)], beta=0.5)
        assert loss_fn.compiled.reason is None and len(loss_fn.compiled.checked) == 1
        batch = x[64:]  # a third batch: neither recorded nor checked on
        pyro.set_rng_seed(7)
        got = loss_fn(batch, beta=0.5)
        assert "Compiled" in type(got.grad_fn).__name__  # the compiled graph ran
        got_grads = torch.autograd.grad(got, params)
        pyro.set_rng_seed(7)  # the same draws: the graph draws from torch's generator
        want = loss_fn.eager(batch, beta=0.5)
        want_grads = torch.autograd.grad(want, params)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=RTOL)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=RTOL * max(1.0, float(b.abs().max())))


def failing_backend(gm, example_inputs):
    raise RuntimeError("this backend compiles nothing")


def test_a_loss_that_cannot_be_compiled_falls_back_to_the_trace_with_a_reason(digits, monkeypatch):
    ds = data.apply_binarization(digits, "dynamic")

    def run(compile: bool) -> train.FitResult:
        pyro.set_rng_seed(0)  # the same initial weights
        vae = VAE(ds.x_dim, latent_dim=2, hidden=(16,))
        cfg = train.TrainConfig(
            epochs=1, batch_size=256, progress=False, device="cpu", compile=compile
        )
        return train.fit(vae.model, vae.guide, ds, cfg)

    monkeypatch.setattr(compiled_mod, "BACKEND", failing_backend)
    fallen = run(compile=True)
    assert fallen.compile.startswith("fallback: the loss could not be compiled (")
    assert "this backend compiles nothing" in fallen.compile and fallen.jit == "traced"
    plain = run(compile=False)
    assert plain.compile == "off"
    assert fallen.history == plain.history  # the fallback is the trace, bit for bit


def test_cli_compile_is_recorded_says_why_not_and_is_free_on_resume(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(compiled_mod, "BACKEND", "aot_eager")
    common = ["--data", "digits", "--epochs", "1", "--batch-size", "256", "--no-progress"]
    out = tmp_path / "vae"
    assert main(["train", "vae", *common, "--compile", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert metrics["compile"] == "compiled" and metrics["jit"] == "traced"
    assert config["train"]["compile"] is True
    assert "note:" not in capsys.readouterr().err
    # --resume may drop (or add) --compile, as --no-jit
    assert main(["train", "vae", "--out", str(out), "--resume", "--epochs", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert metrics["compile"] == "off" and config["train"]["compile"] is False
    assert len(metrics["history"]) == 2

    program = tmp_path / "spread.py"
    program.write_text(DATA_DEPENDENT_PROGRAM)
    spread = tmp_path / "spread"
    assert main(["train", str(program), *common, "--compile", "--out", str(spread)]) == 0
    metrics = json.loads((spread / "metrics.json").read_text())
    assert metrics["compile"].startswith("fallback: the ")
    assert metrics["jit"].startswith("eager: the programs read a tensor's value into Python")
    err = capsys.readouterr().err
    assert f"note: the loss was not compiled: {metrics['compile'][len('fallback: ') :]}" in err


def test_compile_is_a_checked_option():
    assert train.TrainConfig().compile is False
    with pytest.raises(UserError, match="compile must be true or false"):
        train.TrainConfig(compile="yes").validate()
    cfg = train.TrainConfig(objective="capacity", compile=True)
    assert train.compile_status(cfg, None).startswith("off: the capacity objective")


def test_a_compiled_graph_that_fails_on_a_later_batch_is_repeated_without_it(digits, monkeypatch):
    """A compiled loss that raises mid-run (after its check and two good steps) is never
    seen: that step runs again as without --compile on the same batch from the same random
    state, and the run goes on traced; ``compile`` says why."""
    real_compile = torch.compile

    class Flaky:
        def __init__(self, graph):
            self.graph, self.calls = graph, 0

        def __call__(self, *args):
            self.calls += 1
            if self.calls == 4:  # the check's call, two good steps, then a failure
                torch.rand(5)  # the failed call drew from the stream before it died
                raise RuntimeError("a kernel failed")
            return self.graph(*args)

    def run(compile: bool) -> train.FitResult:
        pyro.set_rng_seed(0)
        vae = VAE(digits.x_dim, latent_dim=2, hidden=(16,))
        cfg = train.TrainConfig(
            epochs=2, batch_size=256, progress=False, device="cpu", compile=compile
        )
        return train.fit(vae.model, vae.guide, digits, cfg)

    monkeypatch.setattr(compiled_mod, "BACKEND", "aot_eager")
    monkeypatch.setattr(torch, "compile", lambda *a, **k: Flaky(real_compile(*a, **k)))
    fallen = run(compile=True)
    monkeypatch.undo()
    assert fallen.compile.startswith("fallback: the compiled loss failed on a later batch (")
    assert "RuntimeError: a kernel failed" in fallen.compile and fallen.jit == "traced"
    plain = run(compile=False)
    for a, b in zip(fallen.history, plain.history, strict=True):
        assert a["train_elbo"] == pytest.approx(b["train_elbo"], rel=1e-4)
