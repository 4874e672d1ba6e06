"""The figure worker: the same bytes as drawing here, and a failed worker costs nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppl_vae.figures import curves, run_figures, worker
from ppl_vae.figures import latent as latent_plots
from ppl_vae.figures.worker import FigureWorker


@pytest.fixture(autouse=True)
def worker_allowed(monkeypatch):
    """The suite draws in-process (conftest); here the worker is what is tested."""
    monkeypatch.delenv(worker.ENV, raising=False)


def test_the_variable_keeps_every_figure_in_this_process(monkeypatch):
    monkeypatch.setenv(worker.ENV, "0")
    w = FigureWorker.start()
    assert w.proc is None
    w.draw(history(2), None, None, None)
    assert w.result() == {}  # write_figures then draws them here (the test below)


def history(n: int) -> list[dict]:
    """Epoch records as the trainer writes them (NaN where a run has no value)."""
    return [
        {
            "epoch": e,
            "test_elbo": -100.0 + e,
            "train_elbo": -99.0 + e,
            "rate": 5.0 / e,
            "distortion": 95.0 - e,
            "beta": 1.0,
            "train_objective": float("nan") if e == 1 else 90.0,
            "active_units": 3,
        }
        for e in range(1, n + 1)
    ]


def test_the_workers_figures_are_the_bytes_drawn_here(tmp_path):
    codes = np.random.default_rng(0).normal(size=(300, 5)).astype(np.float32)
    labels, kl = np.arange(300) % 10, [0.5, 2.0, 0.1, 1.0, 0.0]
    w = FigureWorker.start()
    w.draw(history(5), codes, labels, kl)
    got = w.result()
    curves.training_curves(history(5), tmp_path / "c.png")
    latent_plots.latent_scatter(torch.from_numpy(codes), tmp_path / "s.png", labels, kl)
    assert got["training_curves.png"] == (tmp_path / "c.png").read_bytes()
    assert got["latent_scatter.png"] == (tmp_path / "s.png").read_bytes()
    assert w.proc.poll() == 0


def test_a_worker_that_fails_leaves_the_figures_to_this_process(tmp_path, monkeypatch):
    # A worker that dies at once (here: its code raises), and one that cannot start.
    monkeypatch.setattr(worker, "CODE", "raise SystemExit(3)")
    dead = FigureWorker.start()
    dead.draw(history(3), np.zeros((4, 2), np.float32), None, None)
    assert dead.result() == {}
    missing = FigureWorker(None)
    missing.draw(history(3), None, None, None)
    assert missing.result() == {}
    # write_figures then draws both itself: the same figures.
    monkeypatch.setattr(run_figures, "_image_figures", lambda *a: [])
    monkeypatch.setattr(run_figures, "codes_of_test_set", lambda pair, ds: torch.zeros(4, 2))

    class Pair:
        latent_sites = ("z",)  # one local latent site: its codes are scattered

        def eval(self):
            pass

    class Data:
        y_test = labels_test = None

    made = run_figures.write_figures(
        Pair(), Data(), lambda name: tmp_path / name, metrics={"history": history(3)}
    )
    assert sorted(p.name for p in made) == ["latent_scatter.png", "training_curves.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in made)
