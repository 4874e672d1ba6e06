"""``ppl-vae calibrate`` as a user runs it: a relative run directory from a fresh folder,
the record and figure written through the run's manifest, the report showing them, and
bad options refused with one line and nothing written."""

from __future__ import annotations

import json

import pytest
from helpers import snapshot

from ppl_vae.cli import main


@pytest.fixture
def run(run_copy):
    return run_copy


def test_calibrate_writes_the_record_the_figure_and_the_report(run, capsys):
    argv = ["calibrate", "run", "--simulations", "200", "--draws", "19", "--bins", "5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rec = json.loads((run / "calibration.json").read_text())
    assert sorted(rec["sites"]) == ["z"] and len(rec["sites"]["z"]) == 2
    for dim in rec["sites"]["z"]:
        assert sum(dim["histogram"]) == 200 and len(dim["histogram"]) == 5
        assert 0 <= dim["p_value"] <= 1 and dim["spread"] in ("under", "over", "ok")
        assert dim["passed"] == (dim["p_value"] >= rec["threshold"])
    assert [r["latent"] for r in rec["summary"]] == ["z[0]", "z[1]"]
    assert rec["passed"] == all(r["passed"] for r in rec["summary"])
    assert "z[0]" in printed and "calibrated" in printed
    assert (run / "calibration.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((run / "manifest.json").read_text())
    assert {"calibration.json", "calibration.png"} <= set(manifest["files"])
    page = (run / "report.html").read_text()
    assert "Calibration of the guide" in page and "Simulation-based calibration" in page


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--bins", "0"], "--bins"),
        (["--draws", "9", "--bins", "11"], "--bins"),
        (["--simulations", "1"], "--simulations"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(run, capsys, extra, words):
    before = snapshot(run)
    assert main(["calibrate", "run", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err
    assert snapshot(run) == before


def test_a_folder_that_is_no_run_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    assert main(["calibrate", "empty"]) == 2
    assert capsys.readouterr().err.startswith("error:")
    assert list((tmp_path / "empty").iterdir()) == []
