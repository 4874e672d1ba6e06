"""``ppl-vae analyze --amortization-points`` as a user runs it: a relative run directory
from a fresh folder, the gaps with standard errors in ``analysis/report.json`` and in the
report, and the option refused when negative."""

from __future__ import annotations

import json

import pytest
from helpers import snapshot

from ppl_vae.cli import main


@pytest.fixture
def run(run_copy):
    return run_copy


def test_analyze_reports_the_amortization_gap(run, capsys):
    argv = ["analyze", "run", "--points", "4", "--draws", "50", "--nuts-points", "0"]
    assert main([*argv, "--amortization-points", "3"]) == 0
    assert "amortisation gap over 3 points" in capsys.readouterr().out
    gap = json.loads((run / "analysis" / "report.json").read_text())["amortization"]
    assert gap["points"] == 3 and gap["steps"] >= 1
    for key in ("encoder_elbo", "best_elbo", "log_likelihood", "amortization_gap"):
        assert isinstance(gap[key], float) and gap[f"{key}_se"] > 0, key
    assert gap["amortization_gap"] >= 0  # the best per-point ELBO is at least the encoder's
    assert gap["best_elbo"] - gap["encoder_elbo"] == pytest.approx(gap["amortization_gap"], 1e-4)
    assert "amortisation gap" in (run / "report.html").read_text()


def test_zero_points_skip_it_more_than_analysed_take_them_all_negative_is_refused(run, capsys):
    argv = ["analyze", "run", "--points", "2", "--draws", "20", "--nuts-points", "0"]
    before = snapshot(run)
    assert main([*argv, "--amortization-points", "-1"]) == 2
    assert capsys.readouterr().err.startswith("error: --amortization-points")
    assert snapshot(run) == before
    assert main([*argv, "--amortization-points", "0"]) == 0
    assert "amortization" not in json.loads((run / "analysis" / "report.json").read_text())
    assert main([*argv, "--amortization-points", "5"]) == 0
    report = json.loads((run / "analysis" / "report.json").read_text())
    assert report["amortization"]["points"] == 2
