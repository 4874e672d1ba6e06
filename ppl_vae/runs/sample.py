"""The ``sample`` job: decode draws from the prior of a trained run into one PNG grid.

:func:`sample_run` checks every option and the target file before any work (a folder, a
symlink, a name without ``.png`` or an unwritable folder is refused with one line, nothing
written), loads the run (its model only from the run's trusted copy), draws ``n`` codes
from the prior with the model's observed mean decoded (:func:`ppl_vae.traces.generate`)
and writes the grid atomically: a reader never sees half a PNG. Runs trained on
non-image data, or whose model scores something other than x, have no picture and are
refused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ppl_vae import validate
from ppl_vae.errors import UserError


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
) -> Path:
    """Write ``n`` prior samples of the run in ``run_dir`` to the PNG ``out``; returns it."""
    import torch

    from ppl_vae import traces
    from ppl_vae.figures import images as plots
    from ppl_vae.figures.run_figures import placeholder
    from ppl_vae.runs import atomic
    from ppl_vae.runs.build import load_run

    n = validate.sample_count(n)
    validate.seed(seed)
    validate.device(device)
    out = Path(out)
    check_out(out)
    pair, ds, _ = load_run(run_dir, device, trust)
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
    torch.manual_seed(seed)
    x = traces.generate(pair, placeholder(pair, ds, n))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.writing(out) as tmp:  # a reader never sees half a PNG
        plots.image_grid(x, ds.image_shape, tmp, nrow=max(1, math.isqrt(n)))
    return out
