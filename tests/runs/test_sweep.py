"""``ppl-vae sweep beta``: input checked before any training, one run per beta, and the
rate--distortion table and figures."""

from __future__ import annotations

import csv
import json

import matplotlib.image
import pytest

from ppl_vae.cli import main
from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.runs import sweep
from ppl_vae.runs.config import RunConfig
from ppl_vae.runs.report import plus_minus


def test_parse_values():
    assert sweep.parse_values("0.25,1, 4,16") == [0.25, 1.0, 4.0, 16.0]
    for bad, message in [
        ("1,x", "numbers separated by commas"),
        ("", "numbers separated by commas"),
        ("1,0", "must be positive"),
        ("1,-2", "must be positive"),
        ("1,nan", "must be positive"),
        ("1,4,1", "twice"),
    ]:
        with pytest.raises(UserError, match=message):
            sweep.parse_values(bad)


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the input was checked")

    monkeypatch.setattr(sweep, "train_built", refuse)


def base(**model_args) -> RunConfig:
    return RunConfig(model_args=model_args or {"latent_dim": 2}, train=TrainConfig(epochs=1))


@pytest.mark.usefixtures("no_training")
def test_bad_input_fails_before_training(tmp_path):
    with pytest.raises(UserError, match="no latent prior"):
        sweep.sweep_beta(RunConfig(model="ae", train=TrainConfig(epochs=1)), [1.0], tmp_path)
    with pytest.raises(UserError, match="unknown|latent"):
        sweep.sweep_beta(base(latnt_dim=2), [1.0], tmp_path / "a")
    with pytest.raises(UserError, match="epochs"):
        sweep.sweep_beta(RunConfig(train=TrainConfig(epochs=0)), [1.0], tmp_path / "b")
    with pytest.raises(UserError, match="--capacities"):
        sweep.sweep_beta(RunConfig(train=TrainConfig(objective="capacity")), [1.0], tmp_path)
    (tmp_path / "c" / "beta-4").mkdir(parents=True)
    (tmp_path / "c" / "beta-4" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="already holds files"):
        sweep.sweep_beta(base(), [0.5, 4.0], tmp_path / "c")
    assert not (tmp_path / "c" / "beta-0.5").exists()  # nothing trained, nothing written
    assert main(["sweep", "beta", "--values", "1,0", "--out", str(tmp_path / "d")]) == 2
    assert not (tmp_path / "d").exists()


def test_sweep_cli_writes_table_and_figures(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "beta", "--values", "0.5,8", "--epochs", "3", "--latent-dim", "4"]
    assert main([*argv, "--hidden", "64", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "β=0.5: rate" in printed and "β=8: rate" in printed
    assert (out / "beta-0.5" / "metrics.json").is_file()
    assert (out / "beta-8" / "metrics.json").is_file()

    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [float(r["beta"]) for r in rows] == [0.5, 8.0]
    rates = [float(r["rate"]) for r in rows]
    dists = [float(r["distortion"]) for r in rows]
    assert rates[1] < rates[0] and dists[1] > dists[0]
    for r in rows:  # the ELBO identity at beta = 1
        assert float(r["test_elbo"]) == pytest.approx(-(float(r["rate"]) + float(r["distortion"])))
    assert int(rows[1]["active_units"]) <= int(rows[0]["active_units"])

    md = (out / "sweep.md").read_text().splitlines()
    assert md[0].startswith("| run | rate") and len(md) == 6
    assert md[3].startswith("| β=8 |")
    shared = "Test set: every run is scored on the same 360 test examples of `digits`"
    assert md[5] == f"{shared} (no random draw)."
    for r, line in zip(rows, md[2:4]):  # each estimate with its standard error
        for key in ("rate", "distortion", "test_elbo"):
            stderr = float(r[f"{key}_stderr"])
            assert 0 < stderr < 5
            assert f" {plus_minus(float(r[key]), stderr)} |" in line, (key, line)

    rd = matplotlib.image.imread(out / "rate_distortion.png")
    panels = matplotlib.image.imread(out / "samples_by_beta.png")
    assert rd.shape[0] > 200 and rd.shape[1] > 200
    assert panels.shape[1] > 1.5 * panels.shape[0]  # two panels side by side
    assert panels[..., :3].std() > 0.05  # not a blank image


def test_sweep_on_known_factors_reports_metrics_and_capacity_in_one_table(tmp_path):
    """On dsprites-small each row carries MIG, beta-VAE, FactorVAE and DCI, and a capacity
    run sits in the same table as the betas."""
    out = tmp_path / "factors"
    argv = ["sweep", "beta", "--values", "1", "--capacities", "2", "--data", "dsprites-small"]
    argv += ["--epochs", "1", "--latent-dim", "3", "--hidden", "16", "--batch-size", "256"]
    assert main([*argv, "--no-progress", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [r["objective"] for r in rows] == ["elbo", "capacity"]
    for r in rows:
        for key in ("mig", "beta_vae", "factor_vae", "dci_disentanglement"):
            assert 0.0 <= float(r[key]) <= 1.0, key
    scored = json.loads((out / "capacity-2" / "disentanglement.json").read_text())
    assert scored["step"] == json.loads((out / "capacity-2" / "metrics.json").read_text())["steps"]
    assert "| C=2 |" in (out / "sweep.md").read_text()
