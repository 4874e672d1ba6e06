"""dSprites-like data with known generating factors, rendered procedurally and offline.

This is a *generated* stand-in for dSprites (Matthey et al. 2017), not the original
file: the shapes are drawn from implicit functions here, so they differ from the
original sprites pixel for pixel, and published disentanglement numbers on dSprites
are not directly comparable with numbers on this data. The original file is read by
:func:`load_original` when a user has it (``dsprites-original``).

Factors and rendering
---------------------
An image is a function of five discrete factors (the original's ``latents_classes``
without its constant colour column); every combination is one image:

=============  ==========  ============  ====================================
factor         ``dsprites``  ``dsprites-small``  values
=============  ==========  ============  ====================================
shape          3           3             square, ellipse, heart
scale          6           3             ``linspace(0.5, 1, n)``
orientation    40          8             :math:`2\\pi k / n`, :math:`k < n` (in [0, 2pi))
posX           32          8             ``linspace(0, 1, n)``, left to right
posY           32          8             ``linspace(0, 1, n)``, top to bottom
image          64x64       32x32
=============  ==========  ============  ====================================

The combination with classes :math:`c = (c_1, \\dots, c_K)` has index
``ravel_multi_index(c, sizes)`` (row-major, the original file's order), so the full
``dsprites`` grid has :math:`3 \\cdot 6 \\cdot 40 \\cdot 32 \\cdot 32 = 737280` images.
Images are rendered on demand, never all at once (a grid of at most 2**25 pixels in
all, such as ``dsprites-small``, is drawn whole on first use and kept bit-packed).
A pixel centre :math:`p` is mapped into the shape's own frame,
:math:`(u, v) = R(-\\theta)(p - t) / (s\\,r_0)`, with position :math:`t`, orientation
:math:`\\theta`, scale :math:`s` and base half-size :math:`r_0 = H/7`, and is on (1)
where the shape's implicit function is :math:`\\le 0`:

* square: :math:`\\max(|u|, |v|) - 1`;
* ellipse: :math:`u^2 + (v / 0.5)^2 - 1`;
* heart: :math:`(X^2 + Y^2 - 1)^3 - X^2 Y^3` with :math:`X = 1.1u`, :math:`Y = 0.12 - 1.1v`.

Positions keep every shape inside the image: the centre runs over
:math:`[m, H - m]` pixels with :math:`m = \\sqrt{2}\\, r_0 + 0.5`. As in dSprites,
orientation is not identifiable from the image for every shape (a square repeats
every quarter turn, an ellipse every half turn).

Data sets
---------
:func:`load` samples ``n`` combinations without replacement (seeded), renders them
and splits them with a fixed seed into a :class:`FactorDataset`: a
:class:`ppl_vae.data.dataset.Dataset` (flattened binary images in {0, 1}, labels ``y`` = the
shape class) that also carries the :class:`FactorData` and each example's factor
classes (``c_train``, ``c_test``). Metrics read :class:`FactorData` only
(:func:`factor_data`): it samples factor classes and renders images for any of them.

Example::

    >>> fd = factor_data("dsprites-small")
    >>> fd.factor_names, fd.factor_sizes, fd.num_combinations
    (('shape', 'scale', 'orientation', 'posX', 'posY'), (3, 3, 8, 8, 8), 4608)
    >>> c = fd.classes(torch.tensor([0, 4607]))
    >>> c.tolist(), fd.index(c).tolist()
    ([[0, 0, 0, 0, 0], [2, 2, 7, 7, 7]], [0, 4607])
    >>> fd.images(c).shape
    torch.Size([2, 1024])
    >>> ds = load("dsprites-small", n=1000, seed=0)
    >>> ds.x_train.shape, ds.x_test.shape, ds.c_train.shape, ds.image_shape
    (torch.Size([800, 1024]), torch.Size([200, 1024]), torch.Size([800, 5]), (1, 32, 32))
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ppl_vae.data.dataset import Dataset
from ppl_vae.errors import UserError

SHAPES = ("square", "ellipse", "heart")


FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")


ORIGINAL_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"


SOURCES = ("dsprites", "dsprites-small", "dsprites-original")


# name -> (image side, scales, orientations, positions); shapes are always 3.
_GRIDS = {"dsprites": (64, 6, 40, 32), "dsprites-small": (32, 3, 8, 8)}


# default number of sampled combinations for load(): all of dsprites-small;
# 20000 of dsprites (20000 x 4096 floats = 328 MB).
_DEFAULT_N = {"dsprites": 20000, "dsprites-small": None, "dsprites-original": 20000}


_RENDER_CHUNK = 2048


# grids with at most this many pixels in all are drawn once and kept bit-packed
_CACHE_PIXELS = 2**25


@dataclass(frozen=True)
class FactorData:
    """A grid of discrete generating factors and a renderer for any combination of them.

    ``render`` maps an ``(n, K)`` integer array of factor classes to an ``(n, D)``
    float32 tensor of flattened images; everything else is bookkeeping over the grid
    ``factor_sizes`` (combination index <-> classes, classes -> values).
    """

    name: str
    factor_names: tuple[str, ...]
    factor_values: tuple[np.ndarray, ...]
    image_shape: tuple[int, int]
    render: Callable[[np.ndarray], torch.Tensor] = field(repr=False)

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.factor_values)

    @property
    def num_factors(self) -> int:
        return len(self.factor_values)

    @property
    def num_combinations(self) -> int:
        return math.prod(self.factor_sizes)

    def index(self, classes: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Combination index of each row of classes (row-major over ``factor_sizes``)."""
        c = self._check(classes)
        return torch.from_numpy(np.ravel_multi_index(tuple(c.T), self.factor_sizes))

    def classes(self, index: np.ndarray | torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Factor classes ``(n, K)`` of combination indices (the inverse of :meth:`index`)."""
        i = np.asarray(index, dtype=np.int64).reshape(-1)
        if i.size and (i.min() < 0 or i.max() >= self.num_combinations):
            raise UserError(
                f"combination index out of range [0, {self.num_combinations}) for {self.name}"
            )
        return torch.from_numpy(np.stack(np.unravel_index(i, self.factor_sizes), axis=1))

    def values(self, classes: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Factor values ``(n, K)`` (float64) of factor classes."""
        c = self._check(classes)
        cols = [v[c[:, j]] for j, v in enumerate(self.factor_values)]
        return torch.from_numpy(np.stack(cols, axis=1).astype(np.float64))

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` combinations drawn uniformly (with replacement): an ``(n, K)`` int64 array."""
        return np.stack([rng.integers(0, s, size=n) for s in self.factor_sizes], axis=1)

    def images(self, classes: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Flattened images ``(n, H*W)`` float32 in {0, 1}, rendered in chunks."""
        c = self._check(classes)
        parts = [self.render(c[i : i + _RENDER_CHUNK]) for i in range(0, len(c), _RENDER_CHUNK)]
        if not parts:
            return torch.zeros(0, math.prod(self.image_shape))
        return torch.cat(parts)

    def _check(self, classes: np.ndarray | torch.Tensor) -> np.ndarray:
        c = np.asarray(classes, dtype=np.int64)
        if c.ndim != 2 or c.shape[1] != self.num_factors:
            raise UserError(
                f"factor classes must have shape (n, {self.num_factors}) for {self.name}, "
                f"got {c.shape}"
            )
        if c.size and ((c < 0).any() or (c >= np.asarray(self.factor_sizes)).any()):
            raise UserError(
                f"factor classes out of range for {self.name}; sizes are {self.factor_sizes}"
            )
        return c


@dataclass(frozen=True)
class FactorDataset(Dataset):
    """A :class:`~ppl_vae.data.dataset.Dataset` that keeps its factors: ``c_*`` are
    ``(N, K)`` classes."""

    factors: FactorData | None = None
    c_train: torch.Tensor | None = None
    c_test: torch.Tensor | None = None


def factor_data(name: str = "dsprites", data_root: str | Path | None = None) -> FactorData:
    """The factor grid and renderer of a source: ``dsprites``, ``dsprites-small`` or
    ``dsprites-original`` (the original file under ``data_root``)."""
    if name in _GRIDS:
        side, n_scale, n_orient, n_pos = _GRIDS[name]
        return procedural(name, side, n_scale, n_orient, n_pos)
    if name == "dsprites-original":
        return load_original(data_root)
    raise UserError(f"unknown factor data set {name!r}; use one of {', '.join(SOURCES)}")


def procedural(name: str, side: int, n_scale: int, n_orient: int, n_pos: int) -> FactorData:
    """A procedural grid: 3 shapes x ``n_scale`` x ``n_orient`` x ``n_pos`` x ``n_pos``."""
    values = (
        np.arange(3, dtype=np.float64),
        np.linspace(0.5, 1.0, n_scale),
        2 * np.pi * np.arange(n_orient) / n_orient,
        np.linspace(0.0, 1.0, n_pos),
        np.linspace(0.0, 1.0, n_pos),
    )

    def draw(classes: np.ndarray) -> np.ndarray:
        return render_sprites(
            classes[:, 0],
            values[1][classes[:, 1]],
            values[2][classes[:, 2]],
            values[3][classes[:, 3]],
            values[4][classes[:, 4]],
            side,
        ).reshape(len(classes), -1)

    sizes = tuple(len(v) for v in values)
    table: list[np.ndarray] = []  # every image, bit-packed, once a small grid is first drawn

    def render(classes: np.ndarray) -> torch.Tensor:
        if math.prod(sizes) * side * side > _CACHE_PIXELS:
            return torch.from_numpy(draw(classes))
        if not table:
            every = np.stack(np.unravel_index(np.arange(math.prod(sizes)), sizes), axis=1)
            table.append(np.packbits(draw(every) > 0.5, axis=1))
        rows = table[0][np.ravel_multi_index(tuple(classes.T), sizes)]
        return torch.from_numpy(np.unpackbits(rows, axis=1, count=side * side).astype(np.float32))

    return FactorData(name, FACTOR_NAMES, values, (side, side), render)


def render_sprites(
    shape: np.ndarray,
    scale: np.ndarray,
    orientation: np.ndarray,
    pos_x: np.ndarray,
    pos_y: np.ndarray,
    side: int,
) -> np.ndarray:
    """Binary images ``(n, side, side)`` float32 of shapes (0 square, 1 ellipse, 2 heart)
    at the given scale, orientation (radians, counter-clockwise) and position in [0, 1]."""
    r0 = side / 7.0
    margin = math.sqrt(2.0) * r0 + 0.5
    shape = np.asarray(shape)
    cx = margin + np.asarray(pos_x, dtype=np.float32) * (side - 2 * margin)
    cy = margin + np.asarray(pos_y, dtype=np.float32) * (side - 2 * margin)
    grid = np.arange(side, dtype=np.float32) + 0.5
    dx = grid[None, None, :] - cx[:, None, None]  # (n, 1, W)
    dy = grid[None, :, None] - cy[:, None, None]  # (n, H, 1)
    size = np.asarray(scale, dtype=np.float32) * r0
    cos = (np.cos(orientation) / size).astype(np.float32)[:, None, None]
    sin = (np.sin(orientation) / size).astype(np.float32)[:, None, None]
    # Rows grow downward, so a counter-clockwise turn on screen is R(-theta) in (x, -y).
    u = cos * dx - sin * dy
    v = sin * dx + cos * dy
    img = np.zeros(u.shape, dtype=np.float32)
    for k, inside in enumerate((_square, _ellipse, _heart)):
        rows = shape == k
        if rows.any():
            img[rows] = inside(u[rows], v[rows])
    return img


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 1.0


def _ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u**2 + 4.0 * v**2 <= 1.0


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x, y = 1.1 * u, 0.12 - 1.1 * v
    return (x**2 + y**2 - 1.0) ** 3 - x**2 * y**3 <= 0.0


def load(
    name: str = "dsprites-small",
    n: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    data_root: str | Path | None = None,
) -> FactorDataset:
    """``n`` distinct combinations (all when None and the grid is small), split by ``seed``.

    The combinations are drawn without replacement with ``numpy.random.default_rng(seed)``;
    the first ``round(test_fraction * n)`` of that draw are the test split.
    """
    fd = factor_data(name, data_root)
    n = _DEFAULT_N.get(name) if n is None else n
    total = fd.num_combinations
    n = total if n is None else n
    if not 2 <= n <= total:
        raise UserError(f"{name} has {total} combinations; ask for n between 2 and {total}")
    if not 0 < test_fraction < 1:
        raise UserError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(total)[:n] if n < total else rng.permutation(total)
    n_test = min(max(1, round(test_fraction * n)), n - 1)
    c_test, c_train = fd.classes(chosen[:n_test]), fd.classes(chosen[n_test:])
    return FactorDataset(
        name,
        fd.images(c_train),
        fd.images(c_test),
        c_train[:, 0].clone(),
        c_test[:, 0].clone(),
        image_shape=fd.image_shape,
        factors=fd,
        c_train=c_train,
        c_test=c_test,
    )


def load_original(path_or_root: str | Path | None) -> FactorData:
    """The original dSprites file (or any file in its format) as :class:`FactorData`.

    ``path_or_root`` is the ``.npz`` itself or a folder holding ``ORIGINAL_FILE``. The
    file's ``imgs`` ``(N, H, W)`` uint8, ``latents_classes`` and ``latents_values``
    ``(N, 6)`` are read without pickles (its ``metadata`` entry is not read); the constant
    colour column is dropped, leaving the five factors. Images are streamed from the
    archive in chunks and kept bit-packed (368 MB for the full file), so the 2.9 GB of
    uint8 images are never in memory at once. Rows may come in any order: each is filed
    under the index of its classes.
    """
    if path_or_root is None:
        raise UserError(
            f"dsprites-original needs --data-root DIR holding {ORIGINAL_FILE} "
            "(from github.com/deepmind/dsprites-dataset)"
        )
    path = Path(path_or_root)
    if path.is_dir():
        path = path / ORIGINAL_FILE
    if not path.is_file():
        raise UserError(f"{path} does not exist; put {ORIGINAL_FILE} there or pass its path")
    try:
        with np.load(path, allow_pickle=False) as npz:
            classes = np.asarray(npz["latents_classes"], dtype=np.int64)
            latent_values = np.asarray(npz["latents_values"], dtype=np.float64)
        if classes.ndim != 2 or classes.shape[1] != 6 or len(classes) == 0:
            raise UserError(
                f"{path}: latents_classes must be (N, 6) with N >= 1; got {classes.shape}"
            )
        if latent_values.shape != classes.shape or not np.isfinite(latent_values).all():
            raise UserError(f"{path}: latents_values must be finite and shaped like the classes")
        if classes.min() < 0:
            raise UserError(f"{path}: latents_classes holds negative classes; classes count from 0")
        packed, image_shape = _read_packed_images(path, expected=len(classes))
    except UserError:
        raise
    except Exception as exc:  # a file from outside: any failure to parse it is a bad file
        raise UserError(
            f"could not read {path} as a dSprites .npz (imgs, latents_classes, "
            f"latents_values): {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    classes, latent_values = classes[:, 1:], latent_values[:, 1:]
    sizes = tuple(int(s) for s in classes.max(axis=0) + 1)
    flat = np.ravel_multi_index(tuple(classes.T), sizes)
    if len(flat) != math.prod(sizes) or len(np.unique(flat)) != len(flat):
        raise UserError(f"{path}: the rows are not every factor combination exactly once")
    row_of = np.empty(len(flat), dtype=np.int64)
    row_of[flat] = np.arange(len(flat))
    values = tuple(
        latent_values[np.unique(classes[:, j], return_index=True)[1], j] for j in range(5)
    )
    n_pixels = math.prod(image_shape)

    def render(c: np.ndarray) -> torch.Tensor:
        rows = packed[row_of[np.ravel_multi_index(tuple(c.T), sizes)]]
        bits = np.unpackbits(rows, axis=1, count=n_pixels)
        return torch.from_numpy(bits.astype(np.float32))

    return FactorData("dsprites-original", FACTOR_NAMES, values, image_shape, render)


#: The most bytes the bit-packed images may take (the full dSprites file: 368 MB).
PACKED_LIMIT = 4 * 2**30


def _read_packed_images(
    path: Path, expected: int, chunk: int = 16384
) -> tuple[np.ndarray, tuple[int, int]]:
    """Stream ``imgs`` out of the archive ``chunk`` images at a time, bit-packed per image.
    The header must claim ``expected`` images that the archive entry really holds, within
    :data:`PACKED_LIMIT`, before anything is allocated."""
    with zipfile.ZipFile(path) as archive, archive.open("imgs.npy") as f:
        stored = archive.getinfo("imgs.npy").file_size
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(f)
        if len(shape) != 3 or fortran or dtype.hasobject:
            raise ValueError(f"imgs must be a C-ordered (N, H, W) array, got {shape}")
        n, h, w = shape
        per_image = h * w * dtype.itemsize
        if n != expected or min(n, h, w) < 1:
            raise UserError(f"{path}: imgs has shape {shape}, not one image per class row")
        if n * per_image > stored or n * ((h * w + 7) // 8) > PACKED_LIMIT:
            raise UserError(
                f"{path}: imgs claims {shape} {dtype}, more than the archive holds or "
                f"{PACKED_LIMIT >> 30} GiB packed; not a dSprites file"
            )
        packed = np.empty((n, (h * w + 7) // 8), dtype=np.uint8)
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            buf = f.read(k * per_image)
            block = np.frombuffer(buf, dtype=dtype).reshape(k, h * w)
            packed[start : start + k] = np.packbits(block > 0.5, axis=1)
    return packed, (int(h), int(w))
