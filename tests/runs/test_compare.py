"""``ppl-vae compare``: same data and split for every model, a table whose numbers are the
runs' own metrics, one figure, and bad input refused before anything trains."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from PIL import Image

from ppl_vae.cli import main
from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.runs import compare
from ppl_vae.runs.config import RunConfig
from ppl_vae.runs.report import plus_minus

MODELS = ["ae", "pca", "ppca", "sparse-ae"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "out"
    argv = ["compare", "--models", ",".join(MODELS), "--latent-dim", "3", "--epochs", "2"]
    assert main([*argv, "--no-progress", "--out", str(out)]) == 0
    return out


def test_writes_one_run_per_model_and_a_table_of_their_metrics(compared):
    with open(compared / "comparison.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model"] for r in rows] == MODELS
    assert list(rows[0]) == list(compare.COLUMNS)
    for row in rows:
        metrics = json.loads((compared / row["model"] / "metrics.json").read_text())
        config = json.loads((compared / row["model"] / "config.json").read_text())
        assert config["data"] == "digits" and config["train"]["epochs"] == 2
        assert float(row["test_recon_mse"]) == pytest.approx(metrics["test_recon_mse"])
        assert int(row["latent_dim"]) == 3 == metrics["latent_dim"]
        assert int(row["parameters"]) == metrics["parameters"]
        assert 0 <= float(row["code_sparsity"]) <= 1
        if row["model"] in ("ppca", "sparse-ae"):  # a latent prior: the ELBO is reported
            assert float(row["test_elbo"]) == pytest.approx(metrics["test_elbo"])
            assert float(row["test_elbo_stderr"]) == pytest.approx(metrics["test_elbo_stderr"])
        else:
            assert row["test_elbo"] == "" == row["test_elbo_stderr"]
    assert "hidden" not in json.loads((compared / "pca" / "config.json").read_text())["model_args"]
    md = (compared / "comparison.md").read_text()
    assert "| sparse-ae |" in md and "Rows of the figure: input, ae, pca, ppca, sparse-ae" in md
    assert "Test set: every run is scored on the same 360 test examples of `digits`" in md
    ppca = next(r for r in rows if r["model"] == "ppca")
    shown = plus_minus(float(ppca["test_elbo"]), float(ppca["test_elbo_stderr"]))
    assert f"| ppca | {float(ppca['test_recon_mse']):.3f} | {shown} |" in md


def test_figure_has_a_row_of_inputs_and_one_row_per_model(compared):
    with Image.open(compared / "comparison.png") as img:
        width, height = img.size
    side = 32  # 8x8 digits enlarged 4x, 2-pixel gutters, and a 120-pixel label column
    assert width == compare.N_IMAGES * (side + 2) + 2 + 120
    assert height == (1 + len(MODELS)) * (side + 2) + 2


def test_code_sparsity_counts_small_entries():
    codes = torch.tensor([[0.0, 0.009, -0.011, 1.0]])
    assert compare.code_sparsity(codes) == 0.5
    assert compare.code_sparsity(codes, threshold=0.02) == 0.75


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--models", "ae,nope"], "nope"),
        (["--models", "ae,ae"], "more than once"),
        (["--models", "ae,pca", "--set", "l1=0.1"], "l1"),
        (["--models", "vae", "--data", "synthetic"], "likelihood"),
        (["--models", "ae", "--latent-dim", "0"], "latent-dim"),
    ],
)
def test_bad_input_fails_before_training(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", *argv, "--epochs", "1", "--no-progress", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing trained, nothing written


def test_refuses_to_clobber_earlier_runs(compared, capsys):
    argv = ["compare", "--models", "ae", "--epochs", "1", "--no-progress", "--out", str(compared)]
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_python_api_without_an_output_folder():
    base = RunConfig(train=TrainConfig(epochs=1, batch_size=128, progress=False))
    result = compare.compare(base, ["tanh-ae", "sparse-ae"], latent_dim=2)
    assert result.out is None and list(result.runs) == ["tanh-ae", "sparse-ae"]
    assert all(math.isfinite(r["test_recon_mse"]) for r in result.rows)
    assert result.rows[1]["test_elbo"] < 0
    with pytest.raises(UserError, match="unknown model"):
        compare.compare(base, "vae,bogus")


def test_objectives_and_iw_log_likelihood_in_one_table(tmp_path):
    """`--models vae,vae@iwae --iwae-samples K`: the same model on two objectives, each
    scored by the importance-weighted test log p(x), at or above its test ELBO; an
    IWAE-trained model's IW estimate is at or above its own training bound's test value.
    m2-vae scores the test labels it is given: its column says log p(x, y)."""
    from ppl_vae.cli import main

    out = tmp_path / "cmp"
    argv = ["compare", "--models", "vae,vae@iwae,ae,m2-vae", "--epochs", "2", "--hidden", "32"]
    assert main([*argv, "--iwae-samples", "200", "--no-progress", "--out", str(out)]) == 0
    rows = {r["model"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    assert set(rows) == {"vae", "vae@iwae", "ae", "m2-vae"}
    assert [rows[m]["log_likelihood_of"] for m in ("vae", "ae", "m2-vae")] == ["x", "", "x, y"]
    for name in ("vae", "vae@iwae"):
        assert float(rows[name]["test_log_likelihood"]) >= float(rows[name]["test_elbo"]) - 0.05
        assert 0 < float(rows[name]["test_log_likelihood_stderr"]) < 5
    assert rows["ae"]["test_log_likelihood"] == "" == rows["ae"]["test_log_likelihood_stderr"]
    md = (out / "comparison.md").read_text()
    vae = rows["vae"]
    ll = plus_minus(float(vae["test_log_likelihood"]), float(vae["test_log_likelihood_stderr"]))
    assert f" | {ll} | " in md
    m2 = rows["m2-vae"]
    m2_ll = plus_minus(float(m2["test_log_likelihood"]), float(m2["test_log_likelihood_stderr"]))
    assert f" | {m2_ll} (log p(x, y)) | " in md
    cfg = json.loads((out / "vae@iwae" / "config.json").read_text())
    assert cfg["train"]["objective"] == "iwae" and cfg["train"]["num_particles"] == 10
    # the training bound (IWAE with K = 10) on the test set lies below the K = 200 estimate
    from ppl_vae.measure.importance import iw_log_likelihood
    from ppl_vae.runs.build import load_run

    pair, ds, _ = load_run(out / "vae@iwae")
    bound = float(iw_log_likelihood(pair, ds.x_test, None, 10, seed=0).mean())
    assert float(rows["vae@iwae"]["test_log_likelihood"]) >= bound - 0.02
    assert main(["compare", "--models", "vae@nope", "--out", str(tmp_path / "x")]) == 2


def test_entries_name_suite_models_user_files_and_objectives():
    assert compare.parse_models("vae, examples/tutorial_vae.py@iwae") == [
        "vae",
        "examples/tutorial_vae.py@iwae",
    ]
    base = RunConfig(train=TrainConfig(epochs=1))
    (cfg,) = compare.plan(base, ["examples/tutorial_vae.py@iwae"])
    assert compare.entry_name(cfg, base) == "tutorial_vae@iwae"
    assert cfg.train.num_particles == compare.DEFAULT_IWAE_PARTICLES
    assert base.train.objective == "elbo"  # the base configuration is left as it was
    with pytest.raises(UserError, match="unknown objective"):
        compare.parse_models("vae@capcity")
