"""The command line end to end, through a subprocess, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ppl_vae", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_train_then_sample(tmp_path):
    out = tmp_path / "run"
    r = cli(
        "train",
        "vae",
        "--epochs",
        "2",
        "--latent-dim",
        "2",
        "--hidden",
        "64",
        "--out",
        out,
        "--no-progress",
        "--seed",
        "3",
    )
    assert r.returncode == 0, r.stderr
    assert "test ELBO" in r.stdout
    for name in (
        "config.json",
        "metrics.json",
        "checkpoint.json",
        "reconstructions.png",
        "samples.png",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "train_elbo",
        "test_elbo",
        "test_recon_mse",
        "history",
        "seconds",
        "rate",
        "distortion",
        "active_units",
    ):
        assert key in metrics, key
    assert len(metrics["history"]) == 2 and metrics["test_elbo"] < 0
    assert list(out.glob("*.safetensors")) and not list(out.glob(".*tmp*"))
    config = json.loads((out / "config.json").read_text())
    assert config["model_args"] == {"latent_dim": 2, "hidden": [64]}
    assert config["train"]["seed"] == 3
    # --elbo auto (the default) resolved to the closed-form KL, recorded in both files
    assert config["train"]["elbo"] == "meanfield" and config["elbo_requested"] == "auto"
    assert metrics["elbo"] == "meanfield" and metrics["kl"] == {"z": "analytic"}
    assert metrics["elbo_reason"].startswith("meanfield: the closed-form KL at z")

    png = tmp_path / "s.png"
    r = cli("sample", out, "-n", "16", "--out", png)
    assert r.returncode == 0, r.stderr
    with Image.open(png) as img:  # 4x4 grid of 32x32 cells with 2-pixel gutters
        assert img.size == (4 * 34 + 2, 4 * 34 + 2)

    r = cli("train", "vae", "--epochs", "3", "--out", out, "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 3


def test_models_lists_the_suite():
    r = cli("models")
    assert r.returncode == 0
    assert any(line.startswith("vae ") for line in r.stdout.splitlines())


def test_a_users_model_file_trains(tmp_path):
    r = cli(
        "train",
        ROOT / "examples" / "custom_model.py",
        "--epochs",
        "1",
        "--out",
        tmp_path / "u",
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "u" / "config.json").read_text())
    assert config["model"].endswith("custom_model.py")


def bad_npz(tmp_path: Path, name: str, **arrays) -> Path:
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "case, expect",
    [
        ("unknown-model", "unknown model 'nonsense'"),
        ("missing-file", "does not exist"),
        ("nan", "NaN"),
        ("outside", "[0, 1]"),
        ("shapes", "same width"),
        ("model-arg", "does not take"),
    ],
)
def test_bad_input_is_one_clear_line_and_writes_nothing(tmp_path, case, expect):
    rng = np.random.default_rng(0)
    args = {
        "unknown-model": ["nonsense"],
        "missing-file": ["vae", "--data", tmp_path / "missing.npz"],
        "nan": [
            "vae",
            "--data",
            bad_npz(tmp_path, "nan", x_train=np.full((5, 4), np.nan), x_test=np.zeros((2, 4))),
        ],
        "outside": [
            "vae",
            "--data",
            bad_npz(
                tmp_path, "outside", x_train=rng.normal(size=(5, 4)) * 3, x_test=np.zeros((2, 4))
            ),
        ],
        "shapes": [
            "vae",
            "--data",
            bad_npz(tmp_path, "shapes", x_train=np.zeros((5, 4)), x_test=np.zeros((2, 3))),
        ],
        "model-arg": ["vae", "--set", "wings=2"],
    }[case]
    out = tmp_path / "out"
    r = cli("train", *args, "--epochs", "1", "--out", out, "--no-progress")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert expect in lines[0]
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_one_training_and_one_test_image_train_and_skip_the_interpolation(tmp_path):
    # The smallest data set there is: every figure that can be drawn is, the one that
    # needs two test examples is named in figures_skipped, and the run is whole.
    rng = np.random.default_rng(0)
    data = bad_npz(tmp_path, "one", x_train=rng.random((1, 8, 8)), x_test=rng.random((1, 8, 8)))
    r = cli(
        "train", "vae", "--data", data, "--epochs", "1", "--out", tmp_path / "r", "--no-progress"
    )
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert any(s.startswith("interpolation.png:") for s in metrics["figures_skipped"])
    assert not (tmp_path / "r" / "interpolation.png").exists()
    for name in ("training_curves.png", "latent_scatter.png", "samples.png", "report.html"):
        assert (tmp_path / "r" / name).is_file(), name
