"""The fast path changes speed, never results: the host-read-free ELBO gives Pyro's value
and gradients, the CPU permutation and binarisation streams are those of before, a whole
run follows the same ELBO trajectory, and ``ppl-vae bench`` checks that it compares the
same computation. (No test asserts a speed.)"""

from __future__ import annotations

import json

import pyro
import pyro.distributions as dist
import pyro.infer
import pytest
import torch
from ppl_vae.models.vae import VAE

from ppl_vae import data
from ppl_vae.cli import main
from ppl_vae.infer import elbo as elbo_mod
from ppl_vae.infer import trainer as train
from ppl_vae.infer.objective import Objective
from ppl_vae.programs import Programs, from_object
from ppl_vae.runs import bench


def loss_and_grads(loss_fn: Objective, x: torch.Tensor, beta: float, seed: int = 3):
    with loss_fn.pair.scope():
        pyro.set_rng_seed(seed)
        loss = loss_fn(x, beta=beta)
        params = list(loss_fn.pair.parameters())
        grads = torch.autograd.grad(loss, params)
    return loss.detach(), grads


@pytest.mark.parametrize("beta", [1.0, 0.3])  # beta != 1 takes the general (non-exact) path
def test_trace_elbo_matches_pyro_value_and_gradients(digits, beta):
    x = digits.x_train[:32]
    pair = from_object(VAE(digits.x_dim, latent_dim=3, hidden=(16,)), x)
    ours = loss_and_grads(Objective(pair, elbo_mod.make_elbo("trace")), x, beta)
    theirs = loss_and_grads(Objective(pair, pyro.infer.Trace_ELBO(max_plate_nesting=1)), x, beta)
    assert isinstance(elbo_mod.make_elbo("trace"), elbo_mod.Trace_ELBO)
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-6, atol=1e-4)
    for a, b in zip(ours[1], theirs[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_meanfield_elbo_matches_pyro_value_and_gradients(digits, beta):
    x = digits.x_train[:32]
    pair = from_object(VAE(digits.x_dim, latent_dim=3, hidden=(16,)), x)
    ours = loss_and_grads(Objective(pair, elbo_mod.make_elbo("meanfield")), x, beta)
    pyros = pyro.infer.TraceMeanField_ELBO(max_plate_nesting=1)
    theirs = loss_and_grads(Objective(pair, pyros), x, beta)
    assert isinstance(elbo_mod.make_elbo("meanfield"), elbo_mod.TraceMeanField_ELBO)
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-6, atol=1e-4)
    for a, b in zip(ours[1], theirs[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_trace_elbo_matches_pyro_with_a_score_function_site():
    """A discrete (non-reparameterised) latent site: the surrogate differs from the loss."""
    x = torch.tensor([1.0, 0.0, 1.0, 1.0])
    w = torch.nn.Parameter(torch.tensor(0.2))

    def model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Bernoulli(logits=w * x))

    for elbo_cls in (elbo_mod.Trace_ELBO, pyro.infer.Trace_ELBO):
        pyro.set_rng_seed(1)
        loss = elbo_cls(num_particles=4, vectorize_particles=True).differentiable_loss(
            model, guide, x
        )
        (grad,) = torch.autograd.grad(loss, [w])
        if elbo_cls is elbo_mod.Trace_ELBO:
            ours = (loss.detach(), grad)
    torch.testing.assert_close(ours[0], loss.detach(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(ours[1], grad)


def test_cpu_permutation_and_binarisation_streams_unchanged():
    g = data.shuffle_generator(5, "cpu")
    got = torch.cat(list(data.minibatches(103, 10, g, device="cpu")))
    assert torch.equal(got, torch.randperm(103, generator=torch.Generator().manual_seed(5)))
    x = torch.rand(7, 9, generator=torch.Generator().manual_seed(0))
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(2))
    assert torch.equal(data.bernoulli_draw(x, data.shuffle_generator(2)), (u < x).float())


def before_fast_path(monkeypatch):
    """The step as it was: Pyro's Trace_ELBO, the one-tensor-at-a-time Adam, the CPU
    permutation copied per step (a no-op copy on the CPU); and no trace (``jit=False``)."""
    monkeypatch.setitem(elbo_mod.ELBOS, "trace", pyro.infer.Trace_ELBO)
    monkeypatch.setattr(
        train,
        "make_optimizer",
        lambda params, config: torch.optim.Adam(params, lr=config.lr, foreach=False),
    )


def test_fast_path_gives_the_same_elbo_trajectory(digits, monkeypatch):
    ds = data.apply_binarization(digits, "dynamic")
    cfg = dict(epochs=2, batch_size=64, progress=False, seed=4, device="cpu")

    def history(**kw):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)  # the same initial weights
        vae = VAE(ds.x_dim, latent_dim=2, hidden=(32,))
        config = train.TrainConfig(**cfg, **kw)
        result = train.fit(Programs(vae.model, vae.guide, (ds.x_train[:2],)), None, ds, config)
        return result.history

    fast = history()
    with monkeypatch.context() as m:
        before_fast_path(m)
        slow = history(jit=False)
    assert len(fast) == len(slow) == 2
    for a, b in zip(fast, slow):
        for key in ("train_objective", "train_elbo", "test_elbo", "rate", "distortion"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-4), key


def test_bench_checks_the_same_step_and_reports_records():
    records = bench.run(batch_sizes=[4, 8], steps=2, repeats=2, x_dim=12, hidden=(8,), latent=2)
    assert [r["batch_size"] for r in records] == [4, 8]
    for r in records:
        assert r["ratio"] > 0 and r["loss_rel_diff"] < 1e-5 and r["suite_peak_mb"] > 0
        assert r["jit"] == "traced"  # the check compared the trace the steps run
    ablated = bench.run(
        batch_sizes=[4],
        steps=1,
        repeats=1,
        x_dim=12,
        hidden=(8,),
        latent=2,
        ablate=bench.ABLATIONS,
        clock="process",
    )
    assert ablated[0]["ablate"] == sorted(bench.ABLATIONS) and ablated[0]["jit"] == "off"


def test_bench_cli_json(capsys):
    argv = [
        "bench",
        "--device",
        "cpu",
        "--batch-sizes",
        "4",
        "--steps",
        "1",
        "--repeats",
        "1",
        "--x-dim",
        "12",
        "--hidden",
        "8",
        "--latent",
        "2",
        "--json",
    ]
    assert main(argv) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["batch_size"] == 4 and record["ratio"] > 0
    assert main(["bench", "--ablate", "nonsense", "--steps", "1"]) == 2


def test_bench_compile_side_is_checked_and_timed(monkeypatch):
    from ppl_vae.infer import compiled

    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")  # Inductor: a minute to compile
    (record,) = bench.run(
        batch_sizes=[8], steps=1, repeats=2, x_dim=12, hidden=(8,), latent=2, compile=True
    )
    assert record["compile"] == "compiled" and record["compiled_loss_rel_diff"] < 1e-5
    assert record["compiled_ratio"] > 0 and record["compile_seconds"] > 0
    assert "compiled ms" in bench.table([record]).splitlines()[0]
