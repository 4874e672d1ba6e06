"""Pyro's scANVI (``tests/pyro_programs/scanvi.py``, model and guide unchanged) from the
command line with its cell types: one-hot labels (``label_form``) and ``test_accuracy``
through the declared ``label_predictor`` (``classify``: the classifier on ``z2_loc(x)``, as
Pyro's ``main()`` computes the cell types after training).

The oracle: the accuracy computed here, without the engine, from the run's weights loaded
into Pyro's ``SCANVI`` as ``main()`` reads it (``classifier(z2l_encoder(x)[0])``, in eval
mode), on the test cells; and with every cell labelled, a classifier far above chance.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ppl_vae.cli import main

HERE = Path(__file__).parent / "pyro_programs"
GENES, TYPES = 40, 4


def cells(n: int, seed: int = 0):
    """Counts shaped like scANVI's PBMC cells: a profile per cell type (the same for every
    split), a library size per cell; the cell types as ids."""
    g = torch.Generator().manual_seed(seed)
    profiles = torch.rand(TYPES, GENES, generator=g).pow(3) + 0.01
    profiles = profiles / profiles.sum(-1, keepdim=True)
    y = torch.randint(0, TYPES, (n,), generator=g)
    size = torch.exp(5.0 + 0.3 * torch.randn(n, 1, generator=g))
    return torch.poisson(size * profiles[y], generator=g).numpy(), y.numpy()


@pytest.fixture
def fresh(tmp_path, monkeypatch) -> Path:
    shutil.copy(HERE / "scanvi.py", tmp_path / "scanvi.py")
    x, y = cells(300)
    np.savez(
        tmp_path / "cells.npz", x_train=x[:200], x_test=x[200:], y_train=y[:200], y_test=y[200:]
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path


def run(line: str, capsys) -> tuple[int, str]:
    rc = main(line.split())
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def accuracy_from_weights(run_dir: str, x: np.ndarray, y: np.ndarray) -> float:
    """scANVI's accuracy from the run's weights, the engine left out of the prediction."""
    from ppl_vae.runs.build import load_run

    spec = importlib.util.spec_from_file_location("_scanvi_oracle", HERE / "scanvi.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pair = load_run(run_dir)[0]
    net = mod.SCANVI(num_genes=GENES, num_labels=TYPES, l_loc=1.0, l_scale=1.0, scale_factor=1.0)
    owner = pair.model.__self__
    net.load_state_dict(owner.state_dict())
    net.eval()
    with torch.no_grad():
        logits = net.classifier(net.z2l_encoder(torch.tensor(x))[0])
    return float((logits.argmax(-1).numpy() == y).mean())


@pytest.mark.parametrize("labels", [40, 200])
def test_scanvi_reports_test_accuracy_through_its_declared_predictor(labels, fresh, capsys):
    flags = "--set num_genes=40 --set batch_size=50 --batch-size 50 --lr 0.005 --no-progress"
    line = f"train scanvi.py --data cells.npz {flags} --labels {labels} --epochs 15 --out runs/s"
    rc, text = run(line, capsys)
    assert rc == 0, text
    metrics = json.loads(Path("runs/s/metrics.json").read_text())
    assert metrics["train_labels_used"] == labels
    x, y = cells(300)
    assert metrics["test_accuracy"] == pytest.approx(
        accuracy_from_weights("runs/s", x[200:], y[200:])
    )
    if labels == 200:
        assert metrics["test_accuracy"] > 0.8  # chance is about 0.25
