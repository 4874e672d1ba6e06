"""Every model of the registry builds with its defaults, trains from the CLI on digits, gives
finite metrics and is listed by ``ppl-vae models``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from ppl_vae.models.blocks.autoencoder import Autoencoder

from ppl_vae import registry, traces
from ppl_vae.cli import main
from ppl_vae.programs import Programs


@pytest.mark.parametrize("name", registry.names())
def test_model_builds_trains_and_is_listed(name, tmp_path, capsys):
    model, guide = registry.build(name, x_dim=64)
    assert isinstance(model.__self__, Autoencoder)  # the suite's own convenience base
    x, y = torch.rand(3, 64), torch.tensor([0, 1, 2])
    pair = Programs(model, guide, (x, y))
    args = pair.args(x, y)
    assert traces.reconstruct(pair, args).shape == (3, 64)
    assert traces.codes(pair, args).shape == (3, pair.latent_dim)
    assert traces.generate(pair, args).shape == (3, 64)

    out = tmp_path / name
    args = ["train", name, "--epochs", "2", "--batch-size", "64", "--no-progress"]
    assert main([*args, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and len(metrics["history"]) == 2
    for key in ("train_elbo", "test_elbo", "test_recon_mse", "distortion", "seconds"):
        assert math.isfinite(metrics[key]), key
    assert metrics["test_recon_mse"] > 0
    # Trained better than an untrained copy of itself (same seed, same initial weights).
    first = metrics["history"][0]["train_objective"]
    assert metrics["history"][-1]["train_objective"] < first
    assert (metrics["rate"] is None) == (not pair.has_prior)

    capsys.readouterr()
    assert main(["models"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert name in listed


def test_the_readme_table_lists_every_model_with_its_paper():
    """The README's table of the suite: one row per model of the registry, each naming a
    paper (or the lecture notes), and no row for a model that does not exist."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## The suite") : readme.index("## Command line")]
    section = section.replace("\\|", "/")  # an escaped | inside a cell
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| [^|]+ \| (.+) \|$", section, flags=re.M)
    assert sorted(name for name, _ in rows) == sorted(registry.names())
    for name, paper in rows:
        assert re.search(r"(19|20)\d\d|lecture notes", paper), (name, paper)
