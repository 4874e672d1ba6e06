"""Data: every source becomes one :class:`~ppl_vae.data.dataset.Dataset` of tensors.

``sources.py`` is the one table of source names and binarisation modes (no torch: the
CLI's parser reads it); ``loaders.py`` turns a name or an ``.npz`` path into a
:class:`Dataset` (:func:`load`); ``dataset.py`` holds the type, minibatches, binarisation
and the finiteness check; ``fields.py`` the named per-example arrays of a data set of named
arrays (any ``NAME_train``/``NAME_test``), sliced together with ``x``; ``labels.py`` hides
training labels for semi-supervised runs;
``dsprites.py`` makes sprites with known factors and imports only the dataset type. To
add a source: write ``load_<name>() -> Dataset`` in ``loaders.py``, add its name to
``SOURCES`` and one branch to :func:`load`, and test it on data the test writes.

``from ppl_vae import data; data.load("digits")`` works: the names below load their module
on first use, so importing this package imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "sources": ("FACTOR_SOURCES", "SOURCES", "BINARIZE", "TEST_BINARIZE_SEED", "parse_binarize"),
    "loaders": (
        "load",
        "load_digits",
        "load_mnist_5k",
        "load_torchvision",
        "load_npz",
        "from_arrays",
        "as_dataset",
        "load_synthetic",
        "stratified",
        "mnist_5k_file",
        "MNIST_5K",
        "NPZ_MAX_BYTES",
    ),
    "fields": ("Fields", "MAX_ARRAYS"),
    "dataset": (
        "Dataset",
        "bernoulli_draw",
        "shuffle_generator",
        "minibatches",
        "all_finite",
        "validate",
        "apply_binarization",
        "note_on_test_set",
    ),
}


def __getattr__(name: str) -> Any:
    for module, names in _EXPORTS.items():
        if name in names:
            return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({n for names in _EXPORTS.values() for n in names} | set(globals()))
