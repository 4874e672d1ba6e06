"""Pyro programs that take their inputs by name (issue 28), unchanged: ``examples/dmm.py``
(``model(mini_batch, mini_batch_reversed, mini_batch_mask, mini_batch_seq_lengths,
annealing_factor=1.0)``, its batch built by Pyro's own ``get_mini_batch`` declared as the
per-batch input hook) and ``examples/lda.py`` (``model(data, args, batch_size)``: the corpus
by name, ``args`` and ``batch_size`` as constants).

The oracle of DMM's numbers is Pyro's own ``Trace_ELBO`` on the batch Pyro's ``main()``
builds (``get_mini_batch`` of the whole test set), computed without the engine's binding.
The measurements read their sites from one trace (helper F's part of the issue makes them
read each trace's): the synthetic sequences put a full-length row first in each split, so
the first trace and every evaluation batch have the same ``z_1..z_T``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch

from ppl_vae.cli import main
from ppl_vae.infer import TrainConfig, fit

HERE = Path(__file__).parent / "pyro_programs"


def module(name: str):
    spec = importlib.util.spec_from_file_location(f"_named_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


make_data = module("make_data")


@pytest.fixture
def fresh(tmp_path, monkeypatch) -> Path:
    """A fresh folder holding dmm.py and dmm.npz, with a private trust store."""
    shutil.copy(HERE / "dmm.py", tmp_path / "dmm.py")
    make_data.save_sequences(tmp_path / "dmm.npz", 48, 24)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path


def run(line: str, capsys) -> tuple[int, str]:
    rc = main(line.split())
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def test_dmm_trains_and_evaluates_from_the_command_line(fresh, capsys):
    rc, text = run("train dmm.py --data dmm.npz --epochs 2 --batch-size 16 --out runs/d", capsys)
    assert rc == 0, text
    config = json.loads(Path("runs/d/config.json").read_text())
    assert config["bound"] == {
        "mini_batch": "input hook",
        "mini_batch_reversed": "input hook",
        "mini_batch_mask": "input hook",
        "mini_batch_seq_lengths": "input hook",
        "annealing_factor": "default",
        "batch_inputs.sequences": "array sequences",
        "batch_inputs.sequence_lengths": "array sequence_lengths",
    }
    metrics = json.loads(Path("runs/d/metrics.json").read_text())
    assert metrics["epochs"] == 2 and np.isfinite(metrics["test_elbo"])
    rc, text = run("evaluate runs/d --iwae-samples 8", capsys)
    assert rc == 0, text
    ev = json.loads(Path("runs/d/evaluation.json").read_text())
    assert np.isfinite(ev["test_log_likelihood"]) and ev["examples"] == 24
    # a constant by name: the annealing factor of Pyro's main() for the whole run
    line = "train dmm.py --data dmm.npz --epochs 1 --arg annealing_factor=0.2 --out runs/a"
    rc, text = run(line, capsys)
    assert rc == 0, text
    bound = json.loads(Path("runs/a/config.json").read_text())["bound"]
    assert bound["annealing_factor"] == "constant 0.2"


def test_dmm_analysis_reads_the_sites_of_its_points_own_traces(fresh, capsys):
    """Points whose sequences are all shorter than the first trace's (z_1..z_10): the guide
    draws hold the sites of the points' batch, and NUTS on each point runs on its own row
    (its own length), comparing the sites of its own trace."""
    rc, text = run("train dmm.py --data dmm.npz --epochs 1 --batch-size 16 --out runs/d", capsys)
    assert rc == 0, text
    options = "--draws 20 --chains 1 --nuts-samples 5 --nuts-warmup 5 --amortization-points 0"
    rc, text = run(f"analyze runs/d --points 2 --nuts-points 2 {options}", capsys)
    assert rc == 0, text
    report = json.loads(Path("runs/d/analysis/report.json").read_text())
    lengths = np.load("dmm.npz")["sequence_lengths_test"][report["points"]]
    assert lengths.max() < 10  # the seed's two points: none of full length
    assert report["latent_sites"] == [f"z_{t}" for t in range(1, lengths.max() + 1)]
    for row, length in zip(report["nuts"], lengths):
        assert "skipped" not in row and len(row["nuts_mean"]) == 4 * length  # z_dim 4


def test_resume_refuses_a_data_file_whose_arrays_changed(fresh, capsys):
    rc, text = run("train dmm.py --data dmm.npz --epochs 1 --out runs/d", capsys)
    assert rc == 0, text
    arrays = dict(np.load("dmm.npz"))
    arrays["sequence_lengths_train"] = np.maximum(arrays["sequence_lengths_train"] - 1, 1)
    np.savez("dmm.npz", **arrays)
    before = sorted(p.name for p in Path("runs/d").iterdir())
    rc, text = run("train dmm.py --data dmm.npz --epochs 2 --resume --out runs/d", capsys)
    assert rc == 2 and text.count("error:") == 1 and "changed since the run" in text
    assert sorted(p.name for p in Path("runs/d").iterdir()) == before


def pyro_elbo(pair, sequences, lengths, draws: int, seed: int) -> float:
    """Pyro's Trace_ELBO per sequence on the batch Pyro's main() builds, weights of ``pair``."""
    import pyro.contrib.examples.polyphonic_data_loader as poly

    args = poly.get_mini_batch(torch.arange(len(sequences)), sequences, lengths)
    with pair.scope():
        pyro.set_rng_seed(seed)
        loss = pyro.infer.Trace_ELBO(num_particles=draws).loss(pair.model, pair.guide, *args)
    return -loss / len(sequences)


def test_dmm_from_python_matches_pyros_elbo_whatever_the_row_order(fresh):
    from ppl_vae.data import as_dataset
    from ppl_vae.measure.metrics import evaluate

    dmm = module("dmm").MODEL()
    s_tr, l_tr = make_data.sequences(48, seed=0)
    s_te, l_te = make_data.sequences(24, seed=1)
    splits = {
        "train": {"sequences": torch.tensor(s_tr), "sequence_lengths": torch.tensor(l_tr)},
        "test": {"sequences": torch.tensor(s_te), "sequence_lengths": torch.tensor(l_te)},
    }
    result = fit(dmm.model, dmm.guide, splits, TrainConfig(epochs=3, batch_size=16, progress=False))
    pair = result.pair.eval()
    ds = as_dataset(splits)
    x, fields = ds.x_test, ds.y_test

    def ours(order: torch.Tensor) -> list[float]:
        return [
            evaluate(pair, x[order], fields[order], 24, seed=s, draws=16)["elbo"] for s in (0, 1, 2)
        ]

    def close(a: list[float], b: list[float]) -> bool:
        se = (statistics.variance(a) / len(a) + statistics.variance(b) / len(b)) ** 0.5
        return abs(statistics.mean(a) - statistics.mean(b)) < 4 * se + 1e-3

    same = ours(torch.arange(24))
    pyros = [
        pyro_elbo(pair, fields["sequences"], fields["sequence_lengths"], 16, s) for s in (7, 8, 9)
    ]
    assert close(same, pyros), (same, pyros)
    # the rows reordered (the full-length row kept first): the same ELBO within its noise
    rest = torch.randperm(23, generator=torch.Generator().manual_seed(1)) + 1
    shuffled = ours(torch.cat([torch.tensor([0]), rest]))
    assert close(same, shuffled), (same, shuffled)


def test_lda_takes_its_corpus_by_name_and_its_settings_as_constants():
    """Pyro's LDA gets what its main() passes (the corpus as [words, documents], the sizes
    in a Namespace, its own subsample size), and the engine's loss on those arguments is
    Pyro's TraceEnum_ELBO's, draw for draw (every command on it: the test below)."""
    import argparse

    from ppl_vae.data import as_dataset
    from ppl_vae.infer.trainer import make_objective
    from ppl_vae.programs import Programs

    lda = module("lda")
    sizes = {"num_topics": 4, "num_words": 32, "num_words_per_doc": 16}
    pyro.set_rng_seed(0)
    _, _, corpus = lda.model(args=argparse.Namespace(**sizes, num_docs=96))  # main()'s data
    ds = as_dataset({"words_train": corpus.T[:64], "words_test": corpus.T[64:]})
    model, guide = lda.MODEL(num_topics=4, num_words=32, layer_sizes="16-16")
    pair = Programs(model, guide, ds, inputs={"args": sizes, "batch_size": 16})
    data, args, batch_size = pair.args(ds.x_train, ds.y_train)
    assert torch.equal(data, corpus[:, :64]) and batch_size == 16
    assert vars(args) == {**sizes, "num_docs": 64}
    assert pair.binder.bound["batch_inputs.words"] == "array words"
    objective = make_objective(pair, TrainConfig(elbo="enum", jit=False), 64)
    for seed in range(3):
        with pair.scope():
            pyro.set_rng_seed(seed)
            ours = objective(data, args, batch_size, beta=1.0)
            pyro.set_rng_seed(seed)
            elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=2)
            theirs = elbo.differentiable_loss(model, guide, data, args, batch_size)
        assert torch.allclose(ours, theirs), (float(ours), float(theirs))


def test_lda_runs_every_command_from_a_fresh_folder(tmp_path, monkeypatch, capsys):
    """Pyro's LDA from the CLI with relative paths, subsampling its own documents plate
    (``batch_size`` 16 of a 64-document corpus): train and evaluate run (the IW bound a
    note: every latent site is global to the batch), sample and analyze refuse in one
    line each and write nothing, report runs."""
    import argparse

    shutil.copy(HERE / "lda.py", tmp_path / "lda.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    sizes = {"num_topics": 4, "num_words": 32, "num_words_per_doc": 16}
    pyro.set_rng_seed(0)
    _, _, corpus = module("lda").model(args=argparse.Namespace(**sizes, num_docs=96))
    np.savez("lda.npz", words_train=corpus.T[:64].numpy(), words_test=corpus.T[64:].numpy())
    line = (
        "train lda.py --data lda.npz --arg args="
        + json.dumps(sizes).replace(" ", "")
        + " --arg batch_size=16 --set num_topics=4 --set num_words=32"
        + ' --set layer_sizes="16-16" --batch-size 64 --epochs 2 --elbo enum --out runs/l'
    )
    rc, text = run(line, capsys)
    assert rc == 0, text
    metrics = json.loads(Path("runs/l/metrics.json").read_text())
    assert metrics["epochs"] == 2 and np.isfinite(metrics["test_elbo"])
    assert any(
        s.startswith("latent_scatter.png: no latent site")
        for s in metrics.get("figures_skipped", [])
    ), metrics.get("figures_skipped")
    rc, text = run("evaluate runs/l --iwae-samples 4", capsys)
    assert rc == 0, text
    assert np.isfinite(json.loads(Path("runs/l/evaluation.json").read_text())["test_elbo"])
    for command in ("sample runs/l -n 4 --out s.png", "analyze runs/l --points 16"):
        rc, text = run(command, capsys)
        lines = [t for t in text.splitlines() if not t.startswith(("/", " "))]  # warnings
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error:"), text
    assert not Path("s.png").exists() and not Path("runs/l/analysis").exists()
    rc, text = run("report runs/l", capsys)
    assert rc == 0 and Path("runs/l/report.html").is_file(), text
