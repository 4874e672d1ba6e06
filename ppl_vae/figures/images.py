"""Image-grid figures from arrays. Plotting functions take tensors and a path; they never train.

Functions that need a model's decoder (the latent manifold, interpolations, traversals)
take a ``decode`` callable, codes ``(N, d)`` to rows ``(N, C*H*W)``. Every function takes
the data set's ``image_shape``, ``(C, H, W)`` (or ``(H, W)`` for one channel). Matplotlib
figures live in :mod:`ppl_vae.figures.latent` (latent scatter) and :mod:`ppl_vae.figures.curves`
(training curves).

Image grids (:func:`make_grid`, :func:`save_grid`) are drawn with torch and saved with
Pillow, pixel for pixel as torchvision's ``make_grid``/``save_image`` draw them (grey
images as grey PNGs); torchvision is not imported, since importing it loads
``torch._dynamo``, seconds for a command that only draws. Small images (8x8 digits) are
enlarged with nearest-neighbour upsampling so single pixels stay visible.

Example::

    >>> import tempfile, torch
    >>> path = image_grid(torch.rand(16, 64), (1, 8, 8), tempfile.mktemp(suffix=".png"))
    >>> as_images(torch.rand(2, 3 * 28 * 28), (3, 28, 28)).shape
    torch.Size([2, 3, 28, 28])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

MIN_SIDE = 28  # images smaller than this are enlarged by an integer factor


ImageShape = tuple[int, int] | tuple[int, int, int]


def as_images(x: torch.Tensor, image_shape: ImageShape) -> torch.Tensor:
    """Rows ``(N, C*H*W)`` to a clamped ``(N, C, H', W')`` batch, enlarged when small.

    ``image_shape`` is ``(C, H, W)`` or ``(H, W)`` (one channel). Grey (C=1) and RGB (C=3)
    images are drawn as they are; any other number of channels is drawn as their mean.
    """
    c, h, w = (1, *image_shape) if len(image_shape) == 2 else image_shape
    imgs = x.detach().float().cpu().reshape(-1, c, h, w).clamp(0, 1)
    if c not in (1, 3):
        imgs = imgs.mean(1, keepdim=True)
    factor = max(1, -(-MIN_SIDE // max(h, w)))
    if factor > 1:
        imgs = F.interpolate(imgs, scale_factor=factor, mode="nearest")
    return imgs


def make_grid(
    images: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0
) -> torch.Tensor:
    """Images ``(N, C, H, W)`` tiled ``nrow`` to a row, each framed by ``padding`` pixels
    of ``pad_value``: one ``(C, H', W')`` image, laid out as torchvision's ``make_grid``
    lays it out (which also turns one channel into three)."""
    n, c, h, w = images.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    cells = images.new_full((rows * cols, c, h + padding, w + padding), pad_value)
    cells[:n, :, padding:, padding:] = images  # each cell: the frame's top and left, the image
    grid = cells.reshape(rows, cols, c, h + padding, w + padding).permute(2, 0, 3, 1, 4)
    grid = grid.reshape(c, rows * (h + padding), cols * (w + padding))
    return F.pad(grid, (0, padding, 0, padding), value=pad_value)  # the bottom and right frame


def save_grid(grid: torch.Tensor, path: str | Path) -> Path:
    """Save a ``(C, H, W)`` image with values in [0, 1] as a PNG, rounded to 8 bits as
    torchvision's ``save_image`` rounds them: grey for one channel, else RGB."""
    path = Path(path)
    pixels = grid.detach().cpu().float().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path, format="PNG")
    return path


def image_grid(x: torch.Tensor, image_shape: ImageShape, path: str | Path, nrow: int = 8) -> Path:
    """Save rows of ``x`` as one grid image, ``nrow`` images per row, white gutters."""
    return save_grid(make_grid(as_images(x, image_shape), nrow=nrow), path)


def reconstructions(
    x: torch.Tensor, x_hat: torch.Tensor, image_shape: ImageShape, path: str | Path
) -> Path:
    """Inputs in the first row, their reconstructions in the row below (pairs of rows).
    Either may come flat or image-shaped (AIR's data is ``(N, 50, 50)``, its ``obs`` flat)."""
    x, x_hat = x.flatten(1), x_hat.flatten(1)
    n = x.shape[0]
    nrow = min(n, 16)
    rows = []
    for i in range(0, n, nrow):
        rows += [x[i : i + nrow], x_hat[i : i + nrow]]
    return image_grid(torch.cat(rows), image_shape, path, nrow=nrow)


Decode = Callable[[torch.Tensor], torch.Tensor]


def standard_normal_icdf(p: torch.Tensor) -> torch.Tensor:
    """Quantiles of :math:`\\mathcal{N}(0, 1)`: the default prior of the suite."""
    return torch.distributions.Normal(0.0, 1.0).icdf(p)


def prior_quantiles(
    n: int, icdf: Callable[[torch.Tensor], torch.Tensor] | None = None, tail: float = 0.05
) -> torch.Tensor:
    """``n`` values of z at evenly spaced probabilities in ``[tail, 1 - tail]``.

    Spacing by probability rather than by value puts as many grid points in each slice
    of prior mass, so the grid covers where the prior puts codes.
    """
    p = torch.linspace(tail, 1 - tail, n)
    return (icdf or standard_normal_icdf)(p).float()


def manifold_codes(
    latent_dim: int,
    n: int = 20,
    dims: Sequence[int] = (0, 1),
    icdf: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Codes ``(n*n, latent_dim)`` of the manifold grid in row-major order: columns step
    ``dims[0]`` upwards, rows step ``dims[1]`` downwards (high values at the top, as on a
    plot's y axis); the other dimensions stay at zero. One dimension gives one row of ``n``."""
    q = prior_quantiles(n, icdf)
    if len(dims) == 1 or latent_dim == 1:
        z = torch.zeros(n, latent_dim)
        z[:, dims[0]] = q
        return z
    z = torch.zeros(n, n, latent_dim)
    z[:, :, dims[0]] = q[None, :]
    z[:, :, dims[1]] = q.flip(0)[:, None]
    return z.reshape(n * n, latent_dim)


def latent_manifold(
    decode: Decode,
    latent_dim: int,
    image_shape: ImageShape,
    path: str | Path,
    n: int = 20,
    dims: Sequence[int] = (0, 1),
    icdf: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Path:
    """Decode an ``n`` x ``n`` grid of codes over the prior's quantiles (see
    :func:`manifold_codes`) and save it as one image grid."""
    dims = tuple(dims[:1]) if latent_dim == 1 else tuple(dims[:2])
    with torch.no_grad():
        x = decode(manifold_codes(latent_dim, n, dims, icdf))
    return image_grid(x, image_shape, path, nrow=n)


def interpolation(
    decode: Decode,
    z_start: torch.Tensor,
    z_end: torch.Tensor,
    image_shape: ImageShape,
    path: str | Path,
    steps: int = 10,
    x_start: torch.Tensor | None = None,
    x_end: torch.Tensor | None = None,
) -> Path:
    """One row per pair: decoded points on the straight line from ``z_start[i]`` to
    ``z_end[i]`` (``steps`` of them, ends included), framed by the input images
    ``x_start[i]`` and ``x_end[i]`` when given."""
    t = torch.linspace(0, 1, steps)[None, :, None]
    z = (1 - t) * z_start[:, None, :].float().cpu() + t * z_end[:, None, :].float().cpu()
    with torch.no_grad():
        x = decode(z.reshape(-1, z.shape[-1])).detach().cpu().reshape(len(z_start), steps, -1)
    if x_start is not None and x_end is not None:
        x = torch.cat([x_start.cpu()[:, None], x, x_end.cpu()[:, None]], dim=1)
    return image_grid(x.reshape(-1, x.shape[-1]), image_shape, path, nrow=x.shape[1])


def traversals(
    decode: Decode,
    z_base: torch.Tensor,
    image_shape: ImageShape,
    path: str | Path,
    dims: Sequence[int] | None = None,
    n: int = 11,
    icdf: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Path:
    """One row per latent dimension in ``dims`` (default: all): that dimension steps
    through ``n`` prior quantiles while the others stay at ``z_base``."""
    z_base = z_base.detach().float().cpu().reshape(-1)
    dims = list(range(len(z_base))) if dims is None else list(dims)
    q = prior_quantiles(n, icdf)
    z = z_base.repeat(len(dims), n, 1)
    for row, d in enumerate(dims):
        z[row, :, d] = q
    with torch.no_grad():
        x = decode(z.reshape(-1, len(z_base)))
    return image_grid(x, image_shape, path, nrow=n)


def labelled_rows(
    rows: Sequence[torch.Tensor],
    labels: Sequence[str],
    image_shape: ImageShape,
    path: str | Path,
    margin: int = 120,
    dpi: int = 100,
) -> Path:
    """One row of images per entry of ``rows`` (each ``(n, C*H*W)``), named on the left by
    ``labels``. The PNG is the :func:`make_grid` grid plus a ``margin``-pixel label column."""
    from ppl_vae.figures.canvas import new_figure  # an Agg canvas of its own: no pyplot, no backend

    n = rows[0].shape[0]
    grid = make_grid(as_images(torch.cat(list(rows)), image_shape), nrow=n)
    gh, gw = grid.shape[1:]
    fig = new_figure(((gw + margin) / dpi, gh / dpi), dpi)
    ax = fig.add_axes((margin / (gw + margin), 0, gw / (gw + margin), 1))
    ax.imshow(grid.expand(3, -1, -1).permute(1, 2, 0).numpy(), interpolation="nearest")
    cell = (gh - 2) / len(rows)
    ax.set_yticks([2 + cell * (i + 0.5) for i in range(len(rows))], labels=list(labels))
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    path = Path(path)
    fig.savefig(path, dpi=dpi, format="png")
    return path
