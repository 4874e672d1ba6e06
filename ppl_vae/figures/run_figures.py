"""The figure set of a run: every figure a program and its data support, from traces.

:data:`FIGURES` is the one list of their names. :func:`write_figures` draws each one
through a ``path_for(name)`` callback (the run directory's :meth:`~ppl_vae.runs.rundir.
RunDir.staged`, so every figure arrives by rename and is listed in the manifest);
:func:`skipped_figures` says which figures a program cannot have and why (metrics.json's
``figures_skipped``). Plotting functions take arrays and callables and never train.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ppl_vae import data, traces
from ppl_vae.figures.worker import FigureWorker
from ppl_vae.programs import Programs

N_FIGURE = 32


#: Every figure :func:`write_figures` may write into a run directory: the one list of
#: their names (the report shows them in this order, then any other figure).
FIGURES = (
    "training_curves.png",
    "latent_scatter.png",
    "reconstructions.png",
    "samples.png",
    "class_samples.png",
    "latent_manifold.png",
    "interpolation.png",
    "traversals.png",
)


def skipped_figures(pair: Programs, ds: data.Dataset) -> list[str]:
    """The figures :func:`write_figures` leaves out for this program and data, each with
    the reason (a user looks for them otherwise)."""
    latent = ("latent_manifold.png", "interpolation.png", "traversals.png")
    if not pair.latent_sites:
        why = f"no latent site holds one code per example (global: {', '.join(pair.global_sites)})"
        return [
            f"{name}: {why}"
            for name in ("latent_scatter.png", "reconstructions.png", "samples.png", *latent)
        ]
    if ds.image_shape is None:
        return [
            f"{name}: the data are not images" for name in ("reconstructions.png", "samples.png")
        ] + [f"{name}: the data are not images" for name in latent]
    if not pair.x_shaped:
        why = "the model's observed sites do not score x itself"
        return [f"{name}: {why}" for name in ("reconstructions.png", "samples.png", *latent)]
    if len(pair.latent_sites) != 1:
        sites = ", ".join(pair.latent_sites)
        return [
            f"{name}: decoding a code needs one latent site (this has {sites})" for name in latent
        ]
    if ds.x_test.shape[0] < 2:
        return ["interpolation.png: interpolating needs two test examples (this has one)"]
    return []


def placeholder(pair: Programs, ds: data.Dataset, n: int) -> tuple:
    """A batch of ``n`` test examples (repeated as needed) whose values the programs
    ignore when generating or decoding: it gives them their shapes (and labels)."""
    idx = torch.arange(n, device=ds.x_test.device) % ds.x_test.shape[0]
    y = ds.y_test[idx] if ds.y_test is not None and not pair.labels_optional else None
    return pair.args(ds.x_test[idx], y) if pair.takes_labels else (ds.x_test[idx],)


def codes_of_test_set(pair: Programs, ds: data.Dataset) -> torch.Tensor:
    """The guide's codes of the whole test set, ``(N, latent_dim)``, on the CPU."""
    from ppl_vae.measure.metrics import batches

    return torch.cat(
        [traces.codes(pair, a).cpu() for a in batches(ds.x_test, ds.y_test, pair, 1000)]
    )


@torch.no_grad()
def write_figures(
    pair: Programs,
    ds: data.Dataset,
    path_for: Callable[[str], Path],
    seed: int = 0,
    metrics: dict[str, Any] | None = None,
    worker: FigureWorker | None = None,
) -> list[Path]:
    """Every figure the run supports. Any data: ``training_curves.png`` (from
    ``metrics["history"]``) and ``latent_scatter.png`` (the guide's codes of the test set).
    Image data also: ``reconstructions.png`` and ``samples.png`` (prior draws); with one
    latent site also ``latent_manifold.png``, ``interpolation.png`` and ``traversals.png``.
    Figures a program does not support are skipped; ``metrics.json`` names them, with the
    reason, in ``figures_skipped`` (:func:`skipped_figures`).

    The two matplotlib figures are drawn by ``worker`` (a :class:`~ppl_vae.figures.worker.
    FigureWorker` the caller started early; one is started here otherwise) while this
    process draws the image figures; where the worker fails they are drawn here."""
    metrics = metrics or {}
    worker = worker if worker is not None else FigureWorker.start()
    try:
        history = metrics.get("history")
        pair.eval()
        # no local latent site (every one global, as LDA's topics): no code per example
        codes = codes_of_test_set(pair, ds) if pair.latent_sites else None
        kl = metrics.get("kl_per_dim")
        labels = ds.labels_test.cpu().numpy() if ds.labels_test is not None else None
        worker.draw(history, None if codes is None else codes.numpy(), labels, kl)
        images = [] if codes is None else _image_figures(pair, ds, path_for, seed, codes, kl)
        drawn = worker.result()
    finally:
        worker.close()
    out = []
    if history:
        path = path_for("training_curves.png")
        out.append(_write(path, drawn.get("training_curves.png")) or _curves(history, path))
    if codes is not None:
        path = path_for("latent_scatter.png")
        png = drawn.get("latent_scatter.png")
        out.append(_write(path, png) or _scatter(codes, path, labels, kl))
    return out + images


def _write(path: Path, png: bytes | None) -> Path | None:
    """The worker's bytes of a figure written to ``path`` (None: draw it here instead)."""
    if png is None:
        return None
    path.write_bytes(png)
    return path


def _image_figures(pair, ds, path_for, seed, codes, kl) -> list[Path]:
    """:func:`write_figures`' image figures: torch draws them, Pillow saves them."""
    from ppl_vae.figures import images as plots

    paths: list[Path] = []
    if ds.image_shape is None or not pair.x_shaped:
        return paths
    # Dimensions by information: KL where the model has a prior, code variance otherwise.
    rank = torch.tensor(kl) if kl else codes.var(0)
    dims = rank.argsort(descending=True, stable=True)[:10].tolist()
    n = min(N_FIGURE, ds.x_test.shape[0])
    batch = placeholder(pair, ds, n)
    torch.manual_seed(seed)
    paths += [
        plots.reconstructions(
            batch[0],
            traces.reconstruct(pair, batch),
            ds.image_shape,
            path_for("reconstructions.png"),
        ),
        plots.image_grid(
            traces.generate(pair, placeholder(pair, ds, 64)),
            ds.image_shape,
            path_for("samples.png"),
        ),
    ]
    if pair.takes_labels and pair.binder is None and ds.y_test is not None:  # labels, not Fields
        paths.append(class_samples(pair, ds, path_for("class_samples.png")))
    if len(pair.latent_sites) != 1:
        return paths  # decoding a code needs a single latent site
    return paths + _code_figures(pair, ds, path_for, codes, dims)


def _code_figures(pair, ds, path_for, codes: torch.Tensor, dims: list[int]) -> list[Path]:
    """The figures that decode codes of the one latent site: the latent manifold over the
    two most informative dimensions ``dims[:2]``, interpolations and traversals."""
    from ppl_vae.figures import images as plots

    icdf = latent_icdf(pair, ds, codes[:, dims[:2]])

    def decode(z: torch.Tensor) -> torch.Tensor:
        like = placeholder(pair, ds, z.shape[0])
        return traces.decode(pair, z.to(ds.x_test.device), like).cpu()

    pairs = min(8, len(ds.x_test) // 2)  # none with one test example (skipped_figures)
    paths = [
        plots.latent_manifold(
            decode,
            pair.latent_dim,
            ds.image_shape,
            path_for("latent_manifold.png"),
            dims=sorted(dims[:2]),
            icdf=icdf,
        )
    ]
    if pairs:
        paths.append(
            plots.interpolation(
                decode,
                codes[:pairs],
                codes[pairs : 2 * pairs],
                ds.image_shape,
                path_for("interpolation.png"),
                x_start=ds.x_test[:pairs],
                x_end=ds.x_test[pairs : 2 * pairs],
            )
        )
    paths.append(
        plots.traversals(
            decode, codes[0], ds.image_shape, path_for("traversals.png"), dims=dims, icdf=icdf
        )
    )
    return paths


def _curves(history: list[dict[str, Any]], path: Path) -> Path:
    from ppl_vae.figures import curves

    return curves.training_curves(history, path)


def _scatter(codes: torch.Tensor, path: Path, labels, kl) -> Path:
    from ppl_vae.figures import latent

    return latent.latent_scatter(codes, path, labels, kl)


@torch.no_grad()
def class_samples(pair: Programs, ds: data.Dataset, path: Path, per_class: int = 8) -> Path:
    """Class-conditional samples of programs that take labels (a CVAE, M2): one row per
    class of the test set (at most 10), ``per_class`` draws of :math:`p(x|z,y)` each."""
    from ppl_vae.data.labels import as_form
    from ppl_vae.figures import images as plots

    known = ds.y_test[ds.y_test >= 0]
    classes, width = torch.unique(known)[:10], int(known.max()) + 1
    rows = []
    for k in classes:
        x = ds.x_test[:1].expand(per_class, -1)
        y = torch.full((per_class,), int(k), dtype=ds.y_test.dtype, device=ds.y_test.device)
        rows.append(traces.generate(pair, pair.args(x, as_form(y, pair.label_form, width))))
    return plots.image_grid(torch.cat(rows), ds.image_shape, path, nrow=per_class)


def latent_icdf(pair: Programs, ds: data.Dataset, codes: torch.Tensor):
    """Quantile function for figure grids: the model's prior at its latent site (first
    coordinate; i.i.d. coordinates assumed), or the codes' empirical quantiles for a model
    without a prior."""
    if not pair.has_prior:
        return lambda p: torch.quantile(codes.flatten().float(), p)
    with pair.scope():
        tr = traces.poutine.trace(pair.model).get_trace(*placeholder(pair, ds, 1))
    fn = tr.nodes[pair.latent_sites[0]]["fn"]
    base = getattr(fn, "base_dist", fn)
    device = ds.x_test.device
    try:
        loc = base.icdf(torch.tensor([0.5], device=device)[:, None])
        if loc.shape[0] != 1:
            return None
    except (AttributeError, NotImplementedError, RuntimeError, ValueError):
        return None  # plots fall back to the standard normal
    return lambda p: base.icdf(p.to(device)[:, None])[:, 0].cpu()
