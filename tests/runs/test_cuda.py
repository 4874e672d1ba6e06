"""On a CUDA GPU: a training run, its evaluation, and its checkpoint read back on the CPU.

Marked ``cuda`` and skipped where no GPU is visible (the suite never depends on one);
``benchmarks/gpu_check.sh`` runs them with ``pytest -m cuda``."""

from __future__ import annotations

import pytest
import torch

from ppl_vae.infer.config import TrainConfig
from ppl_vae.runs.config import RunConfig

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def small(device: str, epochs: int = 2, **train) -> RunConfig:
    return RunConfig(
        model="vae",
        model_args={"latent_dim": 2, "hidden": [32]},
        train=TrainConfig(epochs=epochs, progress=False, device=device, **train),
    )


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory):
    from ppl_vae.runs.train import train_run

    out = tmp_path_factory.mktemp("cuda") / "run"
    return train_run(small("cuda"), out), out


def test_a_training_step_runs_on_the_gpu_with_a_fused_adam(digits):
    from ppl_vae.models.vae import VAE

    from ppl_vae.infer import trainer

    vae = VAE(digits.x_dim, latent_dim=2, hidden=[32])
    result = trainer.fit(vae.model, vae.guide, digits, small("cuda", epochs=1).train)
    assert all(p.is_cuda for p in result.pair.parameters())
    assert result.optimizer.defaults.get("fused") is True
    assert result.jit == "traced"
    assert result.last["test_elbo"] < 0


def test_evaluate_on_the_gpu_matches_the_trainers_record(cuda_run):
    from ppl_vae.measure.metrics import evaluate

    job, _ = cuda_run
    ds = job.dataset.to(torch.device("cuda"))
    out = evaluate(job.pair, ds.x_test, ds.y_test, seed=job.config.train.seed)
    assert out["elbo"] == pytest.approx(job.metrics["test_elbo"], rel=1e-5)


def test_a_gpu_checkpoint_loads_on_the_cpu_and_scores_the_same(cuda_run):
    from ppl_vae.measure.metrics import evaluate
    from ppl_vae.runs.build import load_run

    job, out = cuda_run
    pair, ds, _ = load_run(out, device="cpu")
    assert all(not p.is_cuda for p in pair.parameters())
    cpu = evaluate(pair, ds.x_test, ds.y_test, seed=job.config.train.seed)
    assert cpu["elbo"] == pytest.approx(job.metrics["test_elbo"], rel=1e-3)  # CPU vs GPU math


def test_a_gpu_run_resumes_bit_for_bit(tmp_path):
    from ppl_vae.runs.train import train_run

    whole = train_run(small("cuda", epochs=2), tmp_path / "whole")
    train_run(small("cuda", epochs=1), tmp_path / "resumed")
    resumed = train_run(small("cuda", epochs=2), tmp_path / "resumed", resume=True)
    assert resumed.metrics["history"] == whole.metrics["history"]
