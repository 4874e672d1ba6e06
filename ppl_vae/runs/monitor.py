"""Live monitoring of a training run: ``history.jsonl`` always, TensorBoard on request.

:func:`~ppl_vae.infer.trainer.fit` knows no files; it calls ``on_epoch(record, result)``
with each new epoch record once the record is checkpointed. The run layer passes a
:class:`Monitor`, which hands the record to its writers (rank 0 alone: the other ranks of
a torchrun job get none):

- :class:`HistoryLog` -- ``history.jsonl`` in the run, one JSON object per line, the same
  records as ``metrics.json``'s ``history``, appended as each epoch ends, so ``tail -f
  DIR/history.jsonl`` (or ``pandas.read_json(..., lines=True)``) follows a run. A fresh
  run creates it empty before the first step. An append is one ``write`` of one whole line
  to the file opened ``O_APPEND``, then ``fsync``, then the manifest entry is refreshed; the
  file as a whole is committed by rename (:meth:`~ppl_vae.runs.rundir.RunDir.write_text`)
  whenever it is not exactly the lines of the history so far -- at the first record of a
  resumed run (a crash between a checkpoint and its line, or a line cut short, is repaired
  there: the checkpoint's history is the truth) and when training ends -- so records of an
  interrupted epoch never appear twice and the finished file equals ``metrics.json``'s
  history line for line.
- :class:`TensorBoardLog` (``--tensorboard``) -- event files under ``DIR/tensorboard/``
  (``tensorboard --logdir DIR``): every number of the epoch record as a scalar under its own
  name (``kl_per_dim`` as ``kl_per_dim/<i>``) at the optimizer step, plus ``lr`` (the
  learning rate at the epoch's last step) and ``step_seconds`` (mean training seconds per
  step in the epoch; not after a resume, whose first epoch began in another process);
  reconstructions and prior samples as images at the first and last epoch and every
  :data:`IMAGE_EVERY` epochs (drawn under their own seed, so training's random streams are
  untouched and a resumed run stays bit for bit); the run configuration as text. The
  writer flushes after every epoch. A resumed run opens a new event file with
  ``purge_step`` at its last checkpointed record, which it writes again: whatever the
  interrupted process wrote from there on is hidden, so no step appears twice. Event files
  are streams TensorBoard reads as they grow, so they cannot arrive by rename; each is
  listed in the manifest as soon as it exists (``--overwrite`` removes it).

Why a flag rather than a default: ``tensorboard`` is an optional extra (``pip install
'ppl-vae[tensorboard]'``), and what a run directory holds should not depend on what else
happens to be installed; ``history.jsonl`` needs nothing and is always written.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from ppl_vae.errors import UserError
from ppl_vae.runs.rundir import RunDir

HISTORY = "history.jsonl"
TENSORBOARD = "tensorboard"
#: Images go to TensorBoard at the first and last epoch and every IMAGE_EVERY epochs.
IMAGE_EVERY = 5
N_IMAGES = 16


def check_tensorboard() -> None:
    """``--tensorboard`` without the package: one clear error, before anything is written."""
    if importlib.util.find_spec("tensorboard") is None:
        raise UserError(
            "--tensorboard needs the tensorboard package: pip install 'ppl-vae[tensorboard]' "
            "(or pip install tensorboard)"
        )


def history_text(history: list[dict[str, Any]]) -> str:
    """The ``history.jsonl`` of a history: one compact JSON object per line."""
    return "".join(json.dumps(r, allow_nan=False, separators=(",", ":")) + "\n" for r in history)


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``history.jsonl`` (a last line cut short is left out)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            break
    return out


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """Every number of an epoch record under its TensorBoard tag (``kl_per_dim/<i>`` for
    the per-dimension list; ``None``, NaN and text are left out)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, bool):
            value = float(value)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[key] = float(value)
        elif isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            out.update({f"{key}/{i}": float(v) for i, v in enumerate(value)})
    return out


class HistoryLog:
    """``history.jsonl``, appended as each epoch ends (see the module docstring). The
    caller holds the run's lock."""

    def __init__(self, run: RunDir):
        self.run = run
        self.synced = False  # the file holds exactly the history up to the last record

    def start(self, resume: bool) -> None:
        if not resume:  # exists at once, so `tail -f` can open it before the first epoch
            self.run.write_text(HISTORY, "")
            self.synced = True

    def _linked(self) -> bool:
        try:
            return os.lstat(self.run.path / HISTORY).st_nlink > 1
        except OSError:
            return False

    def _text(self) -> str:
        try:
            with open(self.run.path / HISTORY, encoding="utf-8") as f:
                return f.read()
        except (OSError, ValueError):
            return ""

    def __call__(self, record: dict[str, Any], history: list[dict[str, Any]]) -> None:
        if not self.synced and (self._linked() or self._text() != history_text(history[:-1])):
            # repaired by rename; and a file another link shares (a `cp -al` backup of the
            # run) is never appended to: the backup keeps its bytes
            self.run.write_text(HISTORY, history_text(history))
            self.synced = True
            return
        fd = os.open(self.run.path / HISTORY, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        try:
            os.write(fd, history_text([record]).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.synced = True
        self.run.record(HISTORY)  # the manifest entry follows the file's size and hash

    def finish(self, history: list[dict[str, Any]]) -> None:
        """The committed file: exactly ``history`` (rewritten by rename only if it is not)."""
        if self._text() != history_text(history):
            self.run.write_text(HISTORY, history_text(history))


def image_grid(x: torch.Tensor, image_shape: tuple[int, ...], nrow: int = 8) -> torch.Tensor:
    """Images ``(N, prod(image_shape))`` as one ``(C, H', W')`` grid in [0, 1], one pixel of
    padding between cells, ``nrow`` cells a row (no matplotlib, no torchvision)."""
    c, h, w = image_shape if len(image_shape) == 3 else (1, *image_shape)
    x = x.detach().float().cpu().reshape(-1, c, h, w).clamp(0, 1)
    n = x.shape[0]
    rows = math.ceil(n / nrow)
    grid = torch.ones(c, rows * (h + 1) + 1, nrow * (w + 1) + 1)
    for k in range(n):
        r, q = divmod(k, nrow)
        grid[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = x[k]
    return grid


@torch.no_grad()
def run_images(pair, ds, seed: int) -> dict[str, torch.Tensor]:
    """``reconstructions`` (test images above their reconstructions) and ``samples`` (prior
    draws) as grids, for image data; drawn under ``seed`` with the caller's random
    streams restored, in eval mode."""
    if ds.image_shape is None:
        return {}
    from ppl_vae import traces
    from ppl_vae.figures.run_figures import placeholder
    from ppl_vae.measure.metrics import eval_mode, seeded

    n = min(N_IMAGES // 2, ds.x_test.shape[0])
    with eval_mode(pair), seeded(seed, ds.x_test.device):
        batch = placeholder(pair, ds, n)
        recon = traces.reconstruct(pair, batch)
        samples = traces.generate(pair, placeholder(pair, ds, N_IMAGES))
    pairs = torch.cat([batch[0].reshape(n, -1).cpu(), recon.reshape(n, -1).cpu()])
    return {
        "reconstructions": image_grid(pairs, ds.image_shape, nrow=n),
        "samples": image_grid(samples, ds.image_shape, nrow=8),
    }


class TensorBoardLog:
    """Event files under ``DIR/tensorboard/`` (see the module docstring); opened at the
    first record, so a run that fails before its first epoch leaves none."""

    def __init__(self, run: RunDir, cfg, ds):
        self.run, self.cfg, self.ds = run, cfg, ds
        self.train = cfg.train
        self.writer = None
        self.last: tuple[int, float] | None = None  # (step, seconds) of the last record

    def _files(self) -> list[str]:
        folder = self.run.path / TENSORBOARD
        return sorted(
            p.relative_to(self.run.path).as_posix()
            for p in (folder.glob("events.out.tfevents.*") if folder.is_dir() else [])
            if p.is_file() and not p.is_symlink()
        )

    def _open(self, history: list[dict[str, Any]]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = self.run.path / TENSORBOARD
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise UserError(f"{folder} is not a folder ppl-vae can write; move it away")
        foreign = [f for f in self._files() if f not in self.run.manifest()]
        if foreign:
            raise UserError(f"{folder} holds event files ppl-vae did not write; move them away")
        resumed = history[:-1]
        purge = resumed[-1]["step"] if resumed else None
        self.writer = SummaryWriter(str(folder), purge_step=purge, flush_secs=3600)
        self.run.record_all(self._files())  # listed as soon as it exists
        if resumed:
            self._scalars(resumed[-1])  # hidden by the purge if the old run wrote it
        else:
            text = "```json\n" + json.dumps(self.cfg.to_dict(), indent=1) + "\n```"
            self.writer.add_text("config", text, 0)

    def learning_rate(self, step: int) -> float:
        """The learning rate of the optimizer step that ended at ``step`` (a pure function
        of the step, as the trainer computes it)."""
        from ppl_vae.infer.optim import step_size
        from ppl_vae.infer.trainer import schedule_steps

        c = self.train
        total = schedule_steps(c, math.ceil(self.ds.x_train.shape[0] / c.batch_size))
        return step_size(c, max(step - 1, 0), total)

    def _scalars(self, record: dict[str, Any]) -> None:
        step = record["step"]
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.add_scalar("lr", self.learning_rate(step), step)

    def __call__(self, record: dict[str, Any], result) -> None:
        if self.writer is None:
            self._open(result.history)
        step = record["step"]
        self._scalars(record)
        if self.last is not None or len(result.history) == 1:
            prev_step, prev_seconds = self.last or (0, 0.0)
            if step > prev_step:
                per_step = (result.seconds - prev_seconds) / (step - prev_step)
                self.writer.add_scalar("step_seconds", per_step, step)
        self.last = (step, result.seconds)
        epoch = record["epoch"]
        if epoch == 1 or epoch == self.train.epochs or epoch % IMAGE_EVERY == 0:
            for tag, grid in run_images(result.pair, self.ds, self.train.seed).items():
                self.writer.add_image(tag, grid, step)
        self.writer.flush()
        self.run.record_all(self._files())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.run.record_all(self._files())
            self.writer = None


class Monitor:
    """The ``on_epoch`` callback :func:`~ppl_vae.infer.trainer.fit` is given by a training
    job: ``history.jsonl`` and, with ``tensorboard=True``, TensorBoard event files."""

    def __init__(self, run: RunDir, cfg, ds, resume: bool = False, tensorboard: bool = False):
        self.history = HistoryLog(run)
        self.history.start(resume)
        self.board = TensorBoardLog(run, cfg, ds) if tensorboard else None

    def __call__(self, record: dict[str, Any], result) -> None:
        self.history(record, result.history)
        if self.board is not None:
            self.board(record, result)

    def close(self, history: list[dict[str, Any]] | None = None) -> None:
        """Close the writers; with the final ``history``, commit ``history.jsonl`` as it."""
        if self.board is not None:
            self.board.close()
        if history is not None:
            self.history.finish(history)
