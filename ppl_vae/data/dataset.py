"""The data set type: whole splits as tensors on the training device.

Every source becomes one :class:`Dataset`: ``x_train`` and ``x_test`` are float
tensors of shape ``(N, D)`` (one flattened example per row), labels are optional.
Image data carries its shape as channels x height x width (``image_shape``, e.g.
``(1, 28, 28)``, with :math:`D = C H W`), so figures and convolutional networks can
unflatten a row; non-image data has ``image_shape = None``.
Minibatches are ``randperm`` slices of those tensors (:func:`minibatches`), never a
per-sample ``torch.utils.data.Dataset``: a preloaded tensor is ~45x cheaper per epoch.

Binarisation (``--binarize``, :func:`apply_binarization`) is described in
:mod:`ppl_vae.data.loaders` with the sources.

Example::

    >>> ds = Dataset("toy", torch.rand(6, 4), torch.rand(2, 4), image_shape=(2, 2))
    >>> ds.image_shape, ds.x_dim
    ((1, 2, 2), 4)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch

from ppl_vae.data.fields import Fields
from ppl_vae.data.sources import TEST_BINARIZE_SEED, parse_binarize
from ppl_vae.errors import UserError


@dataclass(frozen=True)
class Dataset:
    """A whole data set as tensors: ``x_*`` are ``(N, D)`` floats, ``y_*`` labels or None,
    or, for a data set of named arrays, every array by name (:class:`~ppl_vae.data.fields.
    Fields`, sliced with ``x``; ``x`` is then the data view's rows, flattened).

    ``image_shape`` is ``(C, H, W)`` for images (a 2-tuple ``(H, W)`` given by a loader is
    read as one channel) and None otherwise; when set, ``C * H * W == D``.
    """

    name: str
    x_train: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor | Fields | None = None
    y_test: torch.Tensor | Fields | None = None
    image_shape: tuple[int, int, int] | None = None
    binarize: str = "none"
    #: The seed of the test split's one random draw (dynamic binarisation), None where the
    #: test inputs are not drawn: a fixed function of the data set, never the training seed.
    test_seed: int | None = None

    def __post_init__(self) -> None:
        if self.image_shape is None:
            return
        shape = tuple(int(s) for s in self.image_shape)
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or min(shape) < 1:
            raise UserError(
                f"image shape {self.image_shape} of {self.name} is not (C, H, W) or (H, W)"
            )
        if self.x_train.ndim == 2 and math.prod(shape) != self.x_train.shape[1]:
            raise UserError(
                f"image shape {shape} of {self.name} has {math.prod(shape)} values but each "
                f"example has {self.x_train.shape[1]}; give the shape of one example"
            )
        object.__setattr__(self, "image_shape", shape)

    @property
    def image_hw(self) -> tuple[int, int] | None:
        """``(H, W)`` of the images, or None for non-image data."""
        return None if self.image_shape is None else self.image_shape[1:]

    @property
    def named(self) -> bool:
        """Whether the data set is one of named arrays (``y_*`` are :class:`Fields`)."""
        return isinstance(self.y_train, Fields)

    @property
    def labels_train(self) -> torch.Tensor | None:
        """The class labels of the training split: ``y_train``, or a named data set's ``y``."""
        return _labels(self.y_train)

    @property
    def labels_test(self) -> torch.Tensor | None:
        return _labels(self.y_test)

    def with_train_labels(self, y: torch.Tensor) -> Dataset:
        """The data set with training labels ``y`` (a named data set's ``y`` array)."""
        if isinstance(self.y_train, Fields):
            fields = Fields({**self.y_train.arrays, "y": y}, self.y_train.x_name)
            return replace(self, y_train=fields)
        return replace(self, y_train=y)

    @property
    def x_dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def in_unit_interval(self) -> bool:
        """True when every value lies in [0, 1] (what Bernoulli likelihoods need)."""
        return bool(
            self.x_train.min() >= 0
            and self.x_train.max() <= 1
            and self.x_test.min() >= 0
            and self.x_test.max() <= 1
        )

    def to(self, device: torch.device | str) -> Dataset:
        def move(t):
            return None if t is None else t.to(device)

        return replace(
            self,
            x_train=move(self.x_train),
            x_test=move(self.x_test),
            y_train=move(self.y_train),
            y_test=move(self.y_test),
        )

    def scored_train(self, n: int | None = None) -> torch.Tensor:
        """The first ``n`` training rows as the programs score them outside training (the
        first trace, the per-epoch ``train_elbo``, ``evaluate --split train``): under dynamic
        binarisation one fixed-seed binary draw, as the test set is, not the grey levels."""
        x = self.x_train if n is None else self.x_train[:n]
        if self.binarize == "dynamic":
            return bernoulli_draw(x, torch.Generator().manual_seed(0))
        return x

    def train_epoch(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """The training inputs for one epoch: resampled when binarisation is dynamic."""
        if self.binarize == "dynamic":
            return bernoulli_draw(self.x_train, generator)
        return self.x_train


def _labels(y: torch.Tensor | Fields | None) -> torch.Tensor | None:
    if isinstance(y, Fields):
        return y.arrays.get("y")
    return y


#: The validation split of early stopping: this fraction of the training rows (at least
#: one, and at least one left to train on), drawn by a generator of its own with this
#: seed, so the same data always gives the same split whatever the training seed.
VALIDATION_FRACTION = 0.1
VALIDATION_SEED = 20170301


def validation_split(
    ds: Dataset, fraction: float = VALIDATION_FRACTION, seed: int = VALIDATION_SEED
) -> tuple[Dataset, tuple[torch.Tensor, torch.Tensor | None]]:
    """``(training data without the validation rows, (x_val, y_val))``: a random
    ``fraction`` of the training rows (never the test set), in their original order.

    Example::

        >>> ds = Dataset("toy", torch.arange(20.).reshape(10, 2), torch.zeros(2, 2))
        >>> rest, (x_val, _) = validation_split(ds)
        >>> rest.x_train.shape[0], x_val.shape[0]
        (9, 1)
    """
    n = ds.x_train.shape[0]
    if n < 2:
        raise UserError("early stopping needs at least 2 training rows to hold one out")
    size = min(n - 1, max(1, round(n * fraction)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = order[:size].sort().values.to(ds.x_train.device)
    kept = order[size:].sort().values.to(ds.x_train.device)

    def rows(t: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
        return None if t is None else t[idx]

    rest = replace(ds, x_train=ds.x_train[kept], y_train=rows(ds.y_train, kept))
    return rest, (ds.x_train[held], rows(ds.y_train, held))


def bernoulli_draw(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One binary draw :math:`b \\sim \\mathrm{Bernoulli}(x)` per pixel, drawn on the
    generator's device (the CPU without one) and compared where ``x`` lies."""
    where = generator.device if generator is not None else "cpu"
    u = torch.rand(x.shape, generator=generator, device=where).to(x.device)
    return (u < x).to(x.dtype)


def shuffle_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of the epochs' permutations and dynamic binarisation: on CUDA a device
    generator, so both are drawn where the data lies and no step copies indices from the
    host; elsewhere the CPU generator (CPU results stay those of earlier versions)."""
    device = torch.device(device)
    return torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(seed)


def minibatches(
    n: int,
    batch_size: int,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    device: torch.device | str | None = None,
) -> Iterator[torch.Tensor]:
    """Index tensors for one epoch: slices of ``randperm(n)`` (the last one may be short),
    drawn on the generator's device and moved to ``device`` once per epoch, not per step."""
    where = generator.device if generator is not None else (device or "cpu")
    if shuffle:
        order = torch.randperm(n, generator=generator, device=where)
    else:
        order = torch.arange(n, device=where)
    if device is not None:
        order = order.to(device)
    yield from order.split(batch_size)


def all_finite(x: torch.Tensor) -> bool:
    """Whether every value of ``x`` is finite. A sum is NaN or infinite whenever one of its
    terms is, so a finite sum settles it in one pass with no mask
    (``torch.isfinite(x).all()`` costs some 25 times more on a CPU: 0.2 s for 20000 MNIST
    rows); only a non-finite sum, which finite values can also give by overflowing, is
    checked value by value."""
    if not (x.is_floating_point() or x.is_complex()):
        return True
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def validate(ds: Dataset) -> None:
    """Refuse data the models cannot use: NaN/inf, mismatched widths, empty splits."""
    for split, x in (("x_train", ds.x_train), ("x_test", ds.x_test)):
        if x.ndim != 2:
            raise UserError(f"{split} must have one example per row, got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise UserError(f"{split} is empty; the data needs at least one example in each split")
        if not all_finite(x):
            bad = int((~torch.isfinite(x)).sum())
            raise UserError(f"{split} contains {bad} NaN or infinite values; clean the data first")
    if ds.x_train.shape[1] != ds.x_test.shape[1]:
        raise UserError(
            f"x_train has {ds.x_train.shape[1]} features per example but x_test has "
            f"{ds.x_test.shape[1]}; both splits must have the same width"
        )
    if isinstance(ds.y_train, Fields) != isinstance(ds.y_test, Fields):
        raise UserError("both splits must hold the same named arrays")
    if isinstance(ds.y_train, Fields) and list(ds.y_train) != list(ds.y_test):
        raise UserError(
            f"the training split holds {', '.join(ds.y_train)} but the test split "
            f"{', '.join(ds.y_test)}; both splits need the same named arrays"
        )
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        if isinstance(y, Fields) and len(y) != x.shape[0]:
            raise UserError(
                f"the {split} split's named arrays have {len(y)} rows but its data view "
                f"{y.x_name} has {x.shape[0]}"
            )
        if y is not None and y.shape[0] != x.shape[0]:
            raise UserError(
                f"y_{split} has {y.shape[0]} labels but x_{split} has {x.shape[0]} rows"
            )


def apply_binarization(ds: Dataset, mode: str, test_seed: int = TEST_BINARIZE_SEED) -> Dataset:
    """``ds`` binarised as ``--binarize mode`` says (:mod:`ppl_vae.data.loaders`). Under
    ``dynamic`` the training split stays grey (each epoch draws its own binary images with
    the training seed's generator, :meth:`Dataset.train_epoch`) and the test split is drawn
    once with ``test_seed``: a fixed seed of the data set, so every run of it, whatever its
    training seed, is scored on byte-identical test inputs.

    Example::

        >>> ds = Dataset("toy", torch.rand(6, 4), torch.rand(3, 4))
        >>> a, b = apply_binarization(ds, "dynamic"), apply_binarization(ds, "dynamic")
        >>> torch.equal(a.x_test, b.x_test), a.test_seed
        (True, 7919)
    """
    kind, level = parse_binarize(mode)
    if kind == "none":
        return ds
    if not ds.in_unit_interval:
        raise UserError(f"--binarize {mode} needs data in [0, 1]; {ds.name} has values outside it")
    if kind == "threshold":
        return replace(
            ds,
            x_train=(ds.x_train > level).to(ds.x_train.dtype),
            x_test=(ds.x_test > level).to(ds.x_test.dtype),
            binarize=mode,
        )
    g = torch.Generator().manual_seed(int(test_seed))
    return replace(ds, x_test=bernoulli_draw(ds.x_test, g), binarize=mode, test_seed=int(test_seed))


def note_on_test_set(ds: Dataset) -> str:
    """One sentence for tables that set runs side by side: the test inputs every run of
    this data set is scored on, and why they are the same whatever the training seed."""
    n = int(ds.x_test.shape[0])
    if ds.name == "synthetic":
        return f"the {n} test examples of `synthetic` are drawn with the training seed"
    if ds.test_seed is None:
        return f"every run is scored on the same {n} test examples of `{ds.name}` (no random draw)"
    return (
        f"every run is scored on the same {n} test examples of `{ds.name}`, binarised once by "
        f"the data set's fixed draw (`test_binarize_seed` {ds.test_seed}), whatever the "
        "training seed"
    )
