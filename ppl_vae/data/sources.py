"""The names of the data sources and binarisation modes, and nothing that imports torch.

The command line builds ``--data`` and ``--binarize`` from these names at parse time;
:func:`ppl_vae.data.loaders.load` is where each name is turned into data. A new source
adds its name to :data:`SOURCES` and its loader to :mod:`ppl_vae.data.loaders`.

Example::

    >>> parse_binarize("threshold:0.3"), parse_binarize("dynamic")
    (('threshold', 0.3), ('dynamic', None))
"""

from __future__ import annotations

import math

from ppl_vae.errors import UserError

FACTOR_SOURCES = ("dsprites-small", "dsprites", "dsprites-original")


ROTATED_SOURCES = ("digits-rotated", "mnist-5k-rotated")  # ppl_vae.data.rotated


SOURCES = (
    "digits",
    "mnist-5k",
    *ROTATED_SOURCES,
    "mnist",
    "fashion-mnist",
    "kmnist",
    "synthetic",
    *FACTOR_SOURCES,
)


# Binarisation modes; ``threshold`` also takes a level, ``threshold:T``.
BINARIZE = ("none", "static", "threshold", "dynamic")


#: The seed of the test split's dynamic binarisation: one binary draw per data set, the
#: same for every run whatever its training seed (``test_binarize_seed`` in config.json;
#: the draw seed 0 got when the test seed was ``seed + 7919``, so seed-0 runs keep theirs).
TEST_BINARIZE_SEED = 7919


def parse_binarize(mode: str) -> tuple[str, float | None]:
    """``"threshold:0.3"`` to ``("threshold", 0.3)``; ``static`` and a bare ``threshold``
    give 0.5; other modes have no level. Unknown modes are a :class:`UserError`."""
    name, _, level = str(mode).partition(":")
    if name not in BINARIZE or (level and name != "threshold"):
        raise UserError(
            f"unknown binarisation {mode!r}; choose one of {', '.join(BINARIZE)} "
            "or threshold:T with a level T in [0, 1), e.g. threshold:0.3"
        )
    if name not in ("static", "threshold"):
        return name, None
    try:
        t = float(level) if level else 0.5
    except ValueError:
        t = math.nan
    if not 0 <= t < 1:
        raise UserError(f"binarisation {mode!r} needs a threshold T in [0, 1), e.g. threshold:0.3")
    return "threshold", t
