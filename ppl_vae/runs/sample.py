"""The ``sample`` job: decode draws of codes from a trained run into one PNG grid.

:func:`sample_run` checks every option and the target file before any work (a folder, a
symlink, a name without ``.png`` or an unwritable folder is refused with one line, nothing
written), loads the run (its model only from the run's trusted copy), draws ``n`` codes
and decodes the model's observed mean at them (:func:`ppl_vae.traces.decode`), and writes
the grid atomically: a reader never sees half a PNG. The codes come from ``sampler``:

- ``prior``: the model's own prior (:func:`ppl_vae.traces.generate`); a model without one
  (its prior site masked, as ``ae`` and ``pca``) is refused, naming ``--sampler gmm``,
  unless it declares ``refit_after_epoch`` (vq-vae's masked prior is fitted after training);
- ``gmm`` / ``maf``: a density fitted to the guide's codes of the *training* set
  (:mod:`ppl_vae.infer.samplers`), saved in the run and reused (:mod:`ppl_vae.runs.samplers`).

Each reports the mean log-density of the test set's codes under the sampler (nats per
example; the prior's where the model has one): how well it covers codes it was not fitted
to. Runs trained on non-image data, or whose model scores something other than x, have no
picture and are refused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ppl_vae import validate
from ppl_vae.errors import UserError
from ppl_vae.runs import samplers as store
from ppl_vae.runs.rundir import RunDir


def check_out(out: Path) -> None:
    """``out`` must name a new or regular ``.png`` file in a folder this process can write."""
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; name a .png file, e.g. {out / 'samples.png'}")
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file, got {out}")
    if out.is_symlink() or (out.exists() and not out.is_file()):
        raise UserError(f"--out {out} is not a regular file; name a new .png file")
    folder = next((p for p in out.parents if p.exists()), Path("."))
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: cannot write in {folder}; choose another --out")


def sample_run(
    run_dir: str | Path,
    n: int,
    out: str | Path,
    seed: int = 0,
    device: str = "cpu",
    trust: bool = False,
    sampler: str = "prior",
    components: int = 10,
    covariance: str = "full",
    refit: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Write ``n`` samples of the run in ``run_dir`` drawn through ``sampler`` to the PNG
    ``out``; returns it and what was done (``sampler``, ``fitted``, ``record``: the saved
    sampler's record file, ``test_code_log_density``)."""
    import torch

    from ppl_vae import traces
    from ppl_vae.figures import images as plots
    from ppl_vae.figures.run_figures import placeholder
    from ppl_vae.runs import atomic, checkpoint
    from ppl_vae.runs.build import load_run

    n, options = validate.sample_count(n), check_sampler(sampler, components, covariance)
    validate.seed(seed)
    validate.device(device)
    out = Path(out)
    check_out(out)
    run = RunDir(run_dir)
    if sampler != "prior":
        run.check_writable(store.names(sampler))
    (pair, ds, _), step = checkpoint.read_at_step(run_dir, lambda: load_run(run_dir, device, trust))
    check_picture(run_dir, pair, ds)
    like = placeholder(pair, ds, n)
    if sampler == "prior":
        info = prior_info(run_dir, pair, ds)
        torch.manual_seed(seed)
        x = traces.generate(pair, like)
    else:
        fitted, info = fitted_sampler(run, pair, ds, step, sampler, options, refit)
        torch.manual_seed(seed)
        z = fitted.sample(n).to(ds.x_test)
        x = traces.decode(pair, z, like)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.writing(out) as tmp:  # a reader never sees half a PNG
        plots.image_grid(x, ds.image_shape, tmp, nrow=max(1, math.isqrt(n)))
    return out, info


def check_sampler(sampler: str, components: int, covariance: str) -> dict[str, Any]:
    """The options of ``sampler``, checked (one :class:`UserError` line each)."""
    from ppl_vae.infer.samplers import COVARIANCES, KINDS

    if sampler not in KINDS:
        raise UserError(f"--sampler must be one of {', '.join(KINDS)}, got {sampler!r}")
    if covariance not in COVARIANCES:
        raise UserError(f"--covariance must be one of {', '.join(COVARIANCES)}, got {covariance!r}")
    return {
        "components": validate.integer("--components", components, 1, 10_000),
        "covariance": covariance,
    }


def check_picture(run_dir: str | Path, pair, ds) -> None:
    """Refuse runs whose samples are no picture of the data."""
    if ds.image_shape is None:
        raise UserError(
            f"{run_dir} was trained on non-image data; samples have no picture (an .npz "
            "of images holds x_train and x_test as (N, H, W) arrays, not (N, D) rows)"
        )
    if not pair.x_shaped:
        raise UserError(
            f"{run_dir}'s model scores something other than x (its observed sites are "
            f"{', '.join(pair.observed_sites)}); its samples are not images of the data"
        )


def prior_info(run_dir: str | Path, pair, ds) -> dict[str, Any]:
    """``--sampler prior``: refused for a model without a prior; the test codes' mean
    log-density under it."""
    from ppl_vae.programs import owner_of

    # A masked prior is no prior unless a declared hook fits it after training (vq-vae).
    fitted = any(
        callable(getattr(owner_of(fn), "refit_after_epoch", None))
        for fn in (pair.model, pair.guide)
    )
    if not pair.has_prior and not fitted:
        raise UserError(
            f"{run_dir}'s model has no prior (its prior site is masked: nothing trained its "
            "codes towards one); sample from a density fitted to its codes: --sampler gmm "
            "(or --sampler maf)"
        )
    density = None
    if pair.has_prior:
        density = held_out(pair, ds, lambda z, args: prior_log_density(pair, z, args))
    return {"sampler": "prior", "fitted": False, "record": None, "test_code_log_density": density}


def codes_of(pair, x, y):
    """The guide's codes of every row of ``x``, ``(N, latent_dim)``."""
    import torch

    from ppl_vae import traces
    from ppl_vae.measure.metrics import batches

    return torch.cat([traces.codes(pair, a) for a in batches(x, y, pair, 1000)])


def held_out(pair, ds, log_density) -> float | None:
    """The mean over the test set of ``log_density(codes, args)`` (nats per example); None
    where the density is not defined at the codes."""
    from ppl_vae import traces
    from ppl_vae.measure.metrics import batches

    total, count = 0.0, 0
    for args in batches(ds.x_test, ds.y_test, pair, 1000):
        lp = log_density(traces.codes(pair, args), args)
        if lp is None:
            return None
        total, count = total + float(lp.double().sum()), count + lp.shape[0]
    return total / max(count, 1)


def in_support(fn, value) -> bool:
    """Whether ``value`` lies in ``fn``'s support (True where ``fn`` does not say: a flow
    prior of another library)."""
    try:
        support = fn.support
    except NotImplementedError:
        return True
    return bool(support.check(value).all())


def prior_log_density(pair, z, args):
    """:math:`\\log p(z)` per row of the codes ``z``: the model's latent sites' log-densities
    with the model run at ``z`` on the batch ``args``; None where a code lies outside its
    site's support (the codes are the guide's means: of a discrete or bounded site, say
    Pyro's SSVAE label or a Bernoulli, not a value the prior takes)."""
    from pyro import poutine

    from ppl_vae import traces

    model = poutine.condition(pair.model, data=traces.split_codes(pair, z))
    with pair.scope():
        tr = poutine.trace(model).get_trace(*args)
    batch, total = z.shape[0], 0
    for name in pair.latent_sites:
        fn, value = tr.nodes[name]["fn"], tr.nodes[name]["value"]
        shape = fn.batch_shape + fn.event_shape  # codes come flat: (N, D*K) for (N, D, K)
        if value.shape != shape and value.numel() == shape.numel():
            value = value.reshape(shape)
        if not in_support(fn, value):
            return None
        total = total + fn.log_prob(value).reshape(batch, -1).sum(-1)
    return total


def fitted_sampler(run, pair, ds, step, kind: str, options: dict, refit: bool):
    """The run's saved ``kind`` sampler when it fits this checkpoint and these options,
    else one fitted to the training codes and saved; with what was done."""
    wanted = store.requested(kind, options["components"], options["covariance"])
    saved = None if refit else store.load(run, kind)
    record_name = store.names(kind)[0]
    if saved is not None and store.reusable(saved[1], wanted, step):
        if saved[0].sample(1).shape[-1] != pair.latent_dim:
            raise store.damaged(run, record_name, f"is not of {pair.latent_dim}-d codes")
        info = {"sampler": kind, "fitted": False, "record": str(run.path / record_name)}
        return saved[0], {**info, "test_code_log_density": saved[1].get("test_code_log_density")}
    codes = codes_of(pair, ds.x_train, ds.y_train)
    fitted = store.fit(kind, codes, options["components"], options["covariance"])
    density = held_out(pair, ds, lambda z, args: fitted.log_prob(z))
    extra = {"step": step, "train_codes": int(codes.shape[0]), "test_code_log_density": density}
    with run.lock():
        store.save(run, fitted, extra)
    info = {"sampler": kind, "fitted": True, "record": str(run.path / record_name)}
    return fitted, {**info, "test_code_log_density": density}
