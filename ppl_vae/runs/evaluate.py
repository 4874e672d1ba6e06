"""The ``ppl-vae evaluate`` job: a trained run's ELBO and importance-weighted log p(x).

:func:`evaluate_run` loads the run (its model only from the run's trusted copy), scores a
split with :func:`~ppl_vae.measure.likelihood.evaluation` (the ELBO, rate, distortion and
active units, the IW estimate and, with ``ais_steps``, AIS and BDMC bounds, each mean with
its standard error beside it), writes ``evaluation.json`` (``evaluation-train.json`` for
the training split) under the run's lock and refreshes the report. ``step`` is the
checkpoint's step the record describes (the report flags a record older than the run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ppl_vae import validate
from ppl_vae.measure.likelihood import check_ais, evaluation
from ppl_vae.programs import Programs
from ppl_vae.runs import checkpoint
from ppl_vae.runs import generation as quality
from ppl_vae.runs.build import load_split
from ppl_vae.runs.config import read_config
from ppl_vae.runs.rundir import RunDir


def output_path(run_dir: Path, split: str) -> Path:
    return run_dir / ("evaluation.json" if split == "test" else f"evaluation-{split}.json")


def load_split_at_step(
    run_dir: str | Path, split: str = "test", device: str = "cpu", trust: bool = False
) -> tuple[Programs, torch.Tensor, torch.Tensor | None, int | None]:
    """:func:`~ppl_vae.runs.build.load_split` and the step of the checkpoint it loaded
    (:func:`~ppl_vae.runs.checkpoint.recorded_step`), which the results written from it
    record; a checkpoint replaced while it was read (a training run saving) is refused."""
    (pair, x, y), step = checkpoint.read_at_step(
        run_dir, lambda: load_split(run_dir, split, device, trust)
    )
    return pair, x, y, step


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    iwae_samples: int = 1000,
    seed: int = 0,
    batch_size: int = 100,
    chunk_size: int | None = None,
    device: str = "cpu",
    trust: bool = False,
    progress: bool = False,
    ais_steps: int = 0,
    ais_chains: int = 16,
    ais_points: int = 100,
    generation: bool = False,
) -> tuple[dict[str, Any], Path, Path | None]:
    """Score one split of a trained run and write its record, which starts with the
    ``step`` of the checkpoint it scored; returns the record, the file written and the
    refreshed report (None when the run has none). With ``generation`` the record adds
    the Fréchet distance and precision/recall of the model's samples
    (:mod:`ppl_vae.runs.generation`)."""
    from ppl_vae.runs import report

    validate.iwae_samples(iwae_samples)
    validate.batch_size(batch_size)
    validate.seed(seed)
    if chunk_size is not None:
        validate.chunk_size(chunk_size)
    check_ais(ais_steps, ais_chains, ais_points)
    validate.device(device)
    # Every file the job will write, refused before it evaluates or writes anything.
    RunDir(run_dir).check_writable([output_path(Path(), split).name, report.REPORT])
    pair, x, y, step = load_split_at_step(run_dir, split, device, trust)
    record = evaluation(
        pair,
        x,
        y,
        iwae_samples,
        split=split,
        seed=seed,
        chunk_size=chunk_size,
        batch_size=batch_size,
        progress=progress,
        ais_steps=ais_steps,
        ais_chains=ais_chains,
        ais_points=ais_points,
    )
    if generation:
        ref = quality.reference(read_config(RunDir(run_dir)), split)
        record.update(quality.generation_record(pair, ref, x, y, seed))
    record = {"step": step, **record}
    run = RunDir(run_dir)
    with run.lock():  # one writer: not while a training run writes here
        out = run.write_json(output_path(Path(), split).name, record)
    return record, out, report.refresh(run)


def table(record: dict, split: str) -> str:
    """A short two-column table of the headline figures, each estimate with its standard
    error (``-104.2 ± 0.4``)."""
    from ppl_vae.runs.report import cell

    def fmt(v, se=None):
        if v is None:
            return "n/a"
        return cell(v, se) if se is not None else f"{v:.3f}" if isinstance(v, float) else str(v)

    ll = record[f"{split}_log_likelihood"]
    of = record.get("log_likelihood_of", "x")
    rows = [
        (f"{split} ELBO (nats)", record[f"{split}_elbo"], record.get(f"{split}_elbo_stderr")),
        (
            f"{split} log p({of}), IW K={record['iwae_samples']}",
            ll,
            record.get(f"{split}_log_likelihood_stderr"),
        ),
        ("  minus ELBO", None if ll is None else ll - record[f"{split}_elbo"], None),
    ]
    if "ais" in record:
        ais = record["ais"]
        n, steps = ais["points"], ais["steps"]
        rows += [
            (
                f"{split} log p({of}), AIS T={steps} ({n} pts)",
                record[f"{split}_log_likelihood_ais"],
                record.get(f"{split}_log_likelihood_ais_se"),
            ),
            (f"  IW K={record['iwae_samples']}, same points", ais.get("iw_same_points"), None),
            (
                f"BDMC on {n} simulated x: upper",
                record.get(f"{split}_log_likelihood_upper"),
                record.get(f"{split}_log_likelihood_upper_se"),
            ),
            ("  lower (AIS)", ais.get("bdmc_lower"), ais.get("bdmc_lower_se")),
            ("  gap (upper - lower)", ais.get("bdmc_gap"), ais.get("bdmc_gap_se")),
        ]
    rows += [
        ("rate (KL)", record["rate"], record.get("rate_stderr")),
        ("distortion", record["distortion"], record.get("distortion_stderr")),
        ("active units", record["active_units"], None),
        ("recon MSE", record["recon_mse"], None),
        ("seconds", record["seconds"], None),
    ]
    rows += generation_rows(record)
    width = max(len(k) for k, _, _ in rows)
    lines = [f"{k:<{width}}  {fmt(v, se):>18}" for k, v, se in rows]
    for key in ("log_likelihood_note", "ais_note", "generation_note"):
        if record.get(key):
            lines.append(f"note: {record[key]}")
    return "\n".join(lines)


def generation_rows(record: dict) -> list[tuple[str, Any, Any]]:
    """The table's rows of ``evaluate --generation`` (none without it)."""
    if record.get("fd") is None:
        return []
    info = record["generation"]
    acc = info["classifier"]["test_accuracy"]
    return [
        (f"FD, {info['samples']} samples (lower better)", record["fd"], record["fd_stderr"]),
        ("  FD of the data itself (floor)", info["fd_floor"], info["fd_floor_stderr"]),
        (f"precision, k={info['k']}", record["precision"], record["precision_stderr"]),
        (f"recall, k={info['k']}", record["recall"], record["recall_stderr"]),
        ("  classifier test accuracy", acc, None),
    ]
