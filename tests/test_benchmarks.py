"""``benchmarks/whole_run.py`` keeps running: its smoke mode (one repeat of one epoch on 512
rows, each side in this interpreter) trains all three sides -- ``ppl-vae train vae``, the
hand-written script, Pyro's tutorial loop -- on the data it writes. It once crashed before
timing anything (its data became ``(N, 28, 28)`` images, its scripts fed them to
``nn.Linear(784, ...)``) and nothing noticed."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

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
