"""The ``disentangle`` job: a trained run's codes scored against the data's known factors.

For a program pair trained on data with known generating factors (``--data
dsprites-small``, ``dsprites`` or ``dsprites-original``, :mod:`ppl_vae.data.dsprites`), the
representation is the guide's mean code :math:`r(x) = \\mathbb{E}_q[z \\mid x]` over every
latent site (:func:`ppl_vae.traces.codes`), and
:func:`ppl_vae.measure.disentanglement.evaluate_all` scores it with MIG, the beta-VAE and FactorVAE
scores and DCI, by default with disentanglement_lib's study settings (sample and batch
sizes, gradient-boosted trees for DCI: comparable with published scores), with ``fast``
the 3 to 17 times smaller :data:`~ppl_vae.measure.disentanglement.FAST` ones; the record says
which (``settings``, ``reference_settings``). The figure
traverses each latent of a test image's code (the model's observed mean decoded at the
changed code, :func:`ppl_vae.traces.decode`), each row labelled by the factor that latent
captures best.

Example::

    >>> from ppl_vae import data
    >>> from ppl_vae.models.vae import VAE
    >>> from ppl_vae.programs import from_object
    >>> ds = data.load("dsprites-small")
    >>> pair = from_object(VAE(ds.x_dim, latent_dim=3, hidden=(16,)), ds.x_train[:2])
    >>> rec = scores(pair, ds, sizes=SMALL, fast=True)
    >>> sorted(k for k in rec if k in ("mig", "beta_vae", "factor_vae", "dci_disentanglement"))
    ['beta_vae', 'dci_disentanglement', 'factor_vae', 'mig']
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ppl_vae import traces
from ppl_vae.data.dataset import Dataset
from ppl_vae.errors import UserError
from ppl_vae.measure.metrics import eval_mode
from ppl_vae.programs import Programs

#: Estimator settings small enough for doctests and quick checks (not for reporting), over
#: :data:`~ppl_vae.measure.disentanglement.FAST`.
SMALL = {
    "mig": {"num_points": 500},
    "beta_vae": {"num_train": 100, "num_eval": 50},
    "factor_vae": {"num_variance": 500, "num_train": 100, "num_eval": 50},
    "dci": {"num_train": 300, "num_test": 100},
}


METRICS = ("mig", "beta_vae", "factor_vae", "dci_disentanglement")
RECORD, FIGURE = "disentanglement.json", "disentanglement_traversals.png"


def check(pair: Programs, ds: Dataset) -> None:
    """Refuse data without known factors, and programs that need labels to encode."""
    if getattr(ds, "factors", None) is None:
        raise UserError(
            f"the run was trained on {ds.name}, which has no known generating factors; "
            "train on --data dsprites-small (or dsprites) to measure disentanglement"
        )
    if pair.takes_labels:
        raise UserError(f"{pair.name} encodes x with its label; the metrics need codes of x alone")


def representation(
    pair: Programs, batch_size: int = 1000
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Images ``(n, D)`` to the guide's mean codes ``(n, latent_dim)``, on the CPU."""
    device = pair.device

    @torch.no_grad()
    def represent(x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.get_default_dtype())
        with eval_mode(pair):
            parts = [traces.codes(pair, (xb.to(device),)).cpu() for xb in x.split(batch_size)]
        return torch.cat(parts)

    return represent


def scores(
    pair: Programs,
    ds: Dataset,
    seed: int = 0,
    sizes: dict[str, dict[str, Any]] | None = None,
    fast: bool = False,
) -> dict[str, Any]:
    """The record of ``disentanglement.json``
    (see :func:`ppl_vae.measure.disentanglement.evaluate_all`): disentanglement_lib's
    settings, or the smaller ones with ``fast``; ``sizes`` overrides single settings."""
    from ppl_vae.measure.disentanglement import evaluate_all

    check(pair, ds)
    record = evaluate_all(representation(pair), ds.factors, seed=seed, sizes=sizes, fast=fast)
    record["data"] = ds.name
    return record


def traversals(pair: Programs, ds: Dataset, record: dict[str, Any]):
    """The traversal figure of the first test image's code, rows labelled by factor."""
    from ppl_vae.figures.disentanglement import traversal_figure

    device = pair.device
    base = representation(pair)(ds.x_test[:1])[0]
    like = (ds.x_test[:1].to(device),)

    def decode(z: torch.Tensor) -> torch.Tensor:
        with eval_mode(pair):
            batch = (like[0].expand(z.shape[0], -1),)
            return traces.decode(pair, z.to(device), batch).cpu()

    return traversal_figure(decode, base, ds.image_shape[-2:], latents=record.get("latents"))


def disentangle_run(
    run_dir: str | Path,
    seed: int = 0,
    fast: bool = False,
    dci_classifier: str | None = None,
    device: str = "cpu",
    trust: bool = False,
) -> tuple[dict[str, Any], Path, Path | None]:
    """Score the run in ``run_dir`` (:func:`scores`, ``dci_classifier`` ``"forest"`` or
    ``"gbt"`` overriding the settings' one), and write :data:`RECORD` with the checkpoint's
    ``step`` (the report flags a run trained since) and :data:`FIGURE` under the run's lock;
    returns the record, the file written and the refreshed report (None when the run has
    none)."""
    from ppl_vae import validate
    from ppl_vae.runs import checkpoint, report
    from ppl_vae.runs.build import load_run
    from ppl_vae.runs.rundir import RunDir

    validate.seed(seed)
    validate.device(device)
    (pair, ds, _), step = checkpoint.read_at_step(run_dir, lambda: load_run(run_dir, device, trust))
    sizes = {"dci": {"classifier": dci_classifier}} if dci_classifier else None
    record = scores(pair, ds, seed=seed, sizes=sizes, fast=fast)
    record["step"] = step
    figure = traversals(pair, ds, record)
    run = RunDir(run_dir)
    with run.lock():
        out = run.write_json(RECORD, record)
        with run.atomic_path(FIGURE) as tmp:
            figure.savefig(tmp, dpi=figure.dpi, format="png")
    return record, out, report.refresh(run_dir)
