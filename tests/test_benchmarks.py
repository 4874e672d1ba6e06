"""``benchmarks/whole_run.py`` keeps running: its smoke mode (one repeat of one epoch on 512
rows, each side in this interpreter) trains all three sides -- ``ppl-vae train vae``, the
hand-written script, Pyro's tutorial loop -- on the data it writes. It once crashed before
timing anything (its data became ``(N, 28, 28)`` images, its scripts fed them to
``nn.Linear(784, ...)``) and nothing noticed."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def test_whole_run_smoke_trains_the_same_workload_on_all_three_sides():
    spec = importlib.util.spec_from_file_location("whole_run", ROOT / "benchmarks" / "whole_run.py")
    whole_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(whole_run)
    record = whole_run.main(["--smoke"])
    assert record["smoke"] and record["epochs"] == 1
    assert all(len(record[side]) == 1 for side in ("suite", "hand", "pyro"))
    elbo = record["test_elbo"]
    assert all(math.isfinite(v) for v in elbo.values()), elbo
    # One epoch of 4 steps from the same initialisation scale on the same rows: the three
    # land within a few nats of one another, far below the ~540 nats of a 784-pixel
    # coin flip (a side on other data or another network would not).
    assert max(elbo.values()) - min(elbo.values()) < 15, elbo
    assert -520 < min(elbo.values()), elbo


def _script(name: str):
    """A benchmark script as a module (registered: its dataclasses look themselves up)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


@pytest.mark.parametrize("key", ["vae", "linnf-planar", "linnf-radial", "iaf", "vamp", "ae"])
def test_pythae_loader_gives_pythaes_own_densities(key):
    """``vs_pythae.py``'s loader: pythae's weights (random ones, in a fixture pythae 0.1.2
    wrote with ``--make-fixture``, so no pythae here) in the Pyro program give pythae's own
    flow output z_K, log q(z_K|x) and log p(z_K) -- pythae's formulas drop -d/2 log 2 pi --
    and, for the point-mass rows, pythae's reconstruction."""
    vs = _script("vs_pythae")
    fixture = load_file(ROOT / "tests" / "fixtures" / "pythae_loaders.safetensors")
    got = {k.split("/", 1)[1]: v for k, v in fixture.items() if k.startswith(f"{key}/")}
    state = {k[6:]: v for k, v in got.items() if k.startswith("state.")}
    program = vs.PythaeProgram(vs.tiny_row(key), state, **vs.TINY)  # strict: every name
    x = got["x"]
    with torch.no_grad():
        if "recon" in got:
            z = program.posterior(x).sample()
            torch.testing.assert_close(program.likelihood(z).mean, got["recon"])
            return
        q = program.posterior(x)
        z = got["z0"]
        for t in getattr(q, "transforms", []):  # the same Transform objects: q scores z_K
            z = t(z)
        half_d = 0.5 * vs.TINY["latent"] * vs.LOG_2PI
        torch.testing.assert_close(z, got["z"])
        torch.testing.assert_close(q.log_prob(z), got["log_q"] - half_d)
        torch.testing.assert_close(program.prior().log_prob(z), got["log_p"] - half_d)


def test_every_vs_pythae_row_is_a_valid_suite_run():
    """Each row's suite side (``ppl-vae train MODEL`` with its options) validates and builds,
    so a renamed option or model fails here rather than an hour into the benchmark."""
    from ppl_vae import registry
    from ppl_vae.infer.config import TrainConfig

    vs = _script("vs_pythae")
    assert len(vs.ROW_KEYS) == len(vs.ROWS) >= 13
    for row in vs.ROWS:
        TrainConfig(**row.train).validate()
        registry.build(row.model, x_dim=64, latent_dim=2, hidden=[8], **row.model_args)
        assert row.pythae and (row.deterministic or row.config["reconstruction_loss"] == "bce")


def test_hierarchy_gap_trains_every_arm_alike_and_scores_the_paired_gain(tmp_path):
    """``benchmarks/hierarchy_gap.py`` end to end on tiny settings: every arm trained with
    the same options, scored on the same digits, the baseline's gain exactly 0, the JSON
    written."""
    spec = importlib.util.spec_from_file_location(
        "hierarchy_gap", ROOT / "benchmarks" / "hierarchy_gap.py"
    )
    gap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gap)
    args = ["--data", "digits", "--epochs", "1", "--iwae-samples", "5", "--test-rows", "40"]
    args += ["--models", "vae,hvamp-vae", "--hidden", "16", "--top-hidden", "8"]
    report = gap.main([*args, "--latent-dim", "4", "--top-dim", "2", "--out", str(tmp_path)])
    rows = report["rows"]
    assert [r["model"] for r in rows] == ["vae", "hvamp-vae"]
    assert rows[0]["gain"] == 0 and rows[0]["paired_se"] == 0
    for r in rows:
        assert r["n"] == 40 and math.isfinite(r["log_px"]) and r["log_px"] < 0, r
        assert math.isfinite(r["gain"]) and r["se"] > 0
    assert (tmp_path / "hierarchy_gap.json").is_file()


def test_ivae_rotation_runs_and_its_figures_are_in_range():
    """``benchmarks/ivae_rotation.py`` end to end on the 8x8 rotated digits (2 epochs, the
    README's figures come from its mnist-5k run): both arms train and every figure is a
    valid R^2 (at most 1) or correlation (within [-1, 1])."""
    rotation = _script("ivae_rotation")
    out = rotation.main(["--data", "digits-rotated", "--epochs", "2"])
    for key in ("r2_vae", "r2_ivae_content", "r2_ivae_all"):
        assert math.isfinite(out[key]) and out[key] <= 1.0, (key, out)
    assert -1.0 <= out["corr_ivae_angle"] <= 1.0
    assert math.isfinite(out["vae_test_elbo"]) and math.isfinite(out["ivae_test_elbo"])
