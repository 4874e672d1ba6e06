"""A run's two matplotlib figures drawn by a second process while this one draws the rest.

The training curves and the latent scatter are Python-bound work: matplotlib's import
(about 0.5 s) and their drawing (about 0.6 s) hold the interpreter lock, so a thread
cannot overlap them with the image figures, the report or training. :meth:`FigureWorker.
start` launches ``python -c "...worker.main()"`` when training starts: it imports
matplotlib on the second core while the first trains, then waits. :meth:`FigureWorker.
draw` sends it the history and the codes and returns at once; :meth:`FigureWorker.result`
gives the PNGs' bytes, which the caller writes where the run's staging says (the worker
writes no file). Requests are one JSON line and ``.npy`` arrays (``allow_pickle=False``),
answers a JSON line and the bytes: nothing is unpickled. A worker that could not start,
died, answered garbage or took too long gives ``None``, and the caller draws the figure
itself -- the same bytes (tested). The worker imports neither torch nor the caller's
programs; its ``sys.path`` is the caller's minus the working folder. With
``PPL_VAE_FIGURE_WORKER=0`` no worker starts and every figure is drawn in this process: for
a machine with one core, or many runs at once (a test suite, a sweep per core), where a
second process per run only adds its imports.

Example::

    >>> w = FigureWorker.launch()  # start(), without looking at PPL_VAE_FIGURE_WORKER
    >>> w.draw([{"epoch": 1, "test_elbo": -1.0}], None, None, None)
    >>> png = w.result()["training_curves.png"]
    >>> png[:4] == b"\\x89PNG"
    True
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

TIMEOUT_S = 120  # the two figures take about a second; past this the caller draws them
CODE = "import sys; del sys.path[0]; from ppl_vae.figures.worker import main; main()"
ENV = "PPL_VAE_FIGURE_WORKER"  # "0": no worker, the caller draws every figure itself


class FigureWorker:
    """One worker process: :meth:`start`, then one :meth:`draw` and :meth:`result`, or
    :meth:`close` (always safe; a job that fails closes it)."""

    def __init__(self, proc: subprocess.Popen | None):
        self.proc, self._answer, self._thread = proc, None, None

    @classmethod
    def start(cls) -> FigureWorker:
        """A worker, or none where ``PPL_VAE_FIGURE_WORKER=0``."""
        return cls(None) if os.environ.get(ENV) == "0" else cls.launch()

    @classmethod
    def launch(cls) -> FigureWorker:
        """A worker process (none where it cannot start)."""
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", CODE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            proc = None
        return cls(proc)

    def draw(
        self,
        history: Sequence[dict[str, Any]] | None,
        codes: np.ndarray | None,
        labels: np.ndarray | None,
        kl_per_dim: Sequence[float] | None,
    ) -> None:
        """Ask for ``training_curves.png`` (given a history) and ``latent_scatter.png``
        (given codes); the answer is read on a thread, so this returns at once."""
        if self.proc is None:
            return
        header = {"history": history, "scatter": codes is not None, "kl": kl_per_dim}
        header["labels"] = labels is not None
        payload = io.BytesIO()
        payload.write(json.dumps(header).encode() + b"\n")
        for array in (codes, labels):
            if array is not None:
                np.save(payload, np.ascontiguousarray(array), allow_pickle=False)

        def exchange() -> None:
            try:
                out, _ = self.proc.communicate(payload.getvalue(), timeout=TIMEOUT_S)
                if self.proc.returncode == 0:
                    self._answer = parse(out)
            except (OSError, ValueError, subprocess.SubprocessError):
                self.close()

        self._thread = threading.Thread(target=exchange, name="ppl-vae-figure-worker")
        self._thread.start()

    def result(self) -> dict[str, bytes]:
        """The PNG bytes by figure name; empty where the worker failed."""
        if self._thread is not None:
            self._thread.join()
        self.close()
        return self._answer or {}

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def parse(out: bytes) -> dict[str, bytes]:
    """The worker's answer: per figure a JSON line ``{"name", "size"}`` and its bytes."""
    answer, stream = {}, io.BytesIO(out)
    while line := stream.readline():
        entry = json.loads(line)
        name, size = str(entry["name"]), int(entry["size"])
        data = stream.read(size)
        if len(data) != size or not data.startswith(b"\x89PNG"):
            raise ValueError(f"worker: a truncated {name}")
        answer[name] = data
    return answer


def render(request: dict[str, Any], arrays: list[np.ndarray]) -> dict[str, bytes]:
    """Draw what ``request`` asks for, in this process: the worker's work."""
    from ppl_vae.figures import curves, latent

    out = {}
    if request.get("history"):
        buffer = io.BytesIO()
        curves.training_curves(request["history"], buffer)
        out["training_curves.png"] = buffer.getvalue()
    if request.get("scatter"):
        labels = arrays[1] if request.get("labels") else None
        buffer = io.BytesIO()
        latent.latent_scatter(arrays[0], buffer, labels, request.get("kl"))
        out["latent_scatter.png"] = buffer.getvalue()
    return out


def main() -> None:
    """The worker process: import matplotlib, read one request from stdin, answer it."""
    from ppl_vae.figures import curves, latent  # noqa: F401  (matplotlib, before the request)

    stdin = io.BytesIO(sys.stdin.buffer.read())  # np.load needs a seekable file
    request = json.loads(stdin.readline())
    count = int(bool(request.get("scatter"))) + int(bool(request.get("labels")))
    arrays = [np.load(stdin, allow_pickle=False) for _ in range(count)]
    for name, data in render(request, arrays).items():
        sys.stdout.buffer.write(json.dumps({"name": name, "size": len(data)}).encode() + b"\n")
        sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
