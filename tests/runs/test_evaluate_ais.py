"""``ppl-vae evaluate --ais-steps`` as a user runs it (a relative run directory from a fresh
folder), the record's AIS and BDMC keys, the one note for a program that cannot have
them, and the AIS options refused before anything is written."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import pair_of, snapshot
from ppl_vae.models.ae import AE
from ppl_vae.models.sparse_ae import SparseAE

from ppl_vae.cli import main
from ppl_vae.measure.likelihood import evaluation


@pytest.fixture
def run(run_copy):
    return run_copy


def test_evaluate_with_ais_writes_the_sandwich(run, capsys):
    argv = ["evaluate", "run", "--iwae-samples", "50", "--ais-steps", "20", "--ais-chains", "4"]
    assert main([*argv, "--ais-points", "6", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    rec = json.loads((run / "evaluation.json").read_text())
    for key in ("test_log_likelihood_ais", "test_log_likelihood_upper"):
        assert math.isfinite(rec[key]) and rec[f"{key}_se"] > 0, key
    ais = rec["ais"]
    assert ais["steps"] == 20 and ais["chains"] == 4 and ais["points"] == 6
    assert 0 < ais["acceptance"] <= 1 and ais["evaluations_per_example"] == 4 * (1 + 19 * 6)
    # the BDMC pair brackets the simulated points' log p(x): upper - lower > 0 within noise
    assert ais["bdmc_gap"] > -3 * ais["bdmc_gap_se"]
    assert rec["test_log_likelihood_upper"] - ais["bdmc_lower"] == pytest.approx(
        ais["bdmc_gap"], abs=1e-4
    )
    assert ais["ais_minus_iw"] == pytest.approx(
        rec["test_log_likelihood_ais"] - ais["iw_same_points"], abs=1e-4
    )
    assert "ais_note" not in rec and "AIS T=20" in printed and "upper" in printed
    page = (run / "report.html").read_text()
    assert "test log p(x), AIS" in page and "BDMC upper bound" in page


@pytest.mark.parametrize("cls, why", [(AE, "no latent prior"), (SparseAE, "point-mass")])
def test_a_program_without_log_p_gets_one_note_and_no_numbers(cls, why):
    model = cls(x_dim=6, latent_dim=2, hidden=(8,))
    rec = evaluation(pair_of(model), torch.rand(5, 6), num_samples=5, ais_steps=5)
    assert rec["test_log_likelihood"] is None and "test_log_likelihood_ais" not in rec
    assert rec["ais_note"].startswith("no AIS:") and why in rec["ais_note"]


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--ais-steps", "-1"], "--ais-steps"),
        (["--ais-steps", "5", "--ais-chains", "0"], "--ais-chains"),
        (["--ais-steps", "5", "--ais-points", "0"], "--ais-points"),
    ],
)
def test_bad_ais_options_are_one_line_and_write_nothing(run, capsys, extra, words):
    before = snapshot(run)
    assert main(["evaluate", "run", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err
    assert snapshot(run) == before
