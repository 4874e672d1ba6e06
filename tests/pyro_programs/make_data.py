"""Small .npz data sets for the conformance programs in this folder (issue 22).

``python tests/pyro_programs/make_data.py OUT_DIR`` writes, each with ``x_train``/``x_test``
(and ``y_train``/``y_test`` where said), all small enough for CI:

``cvae.npz``
    Pyro's examples/cvae quadrant task on ``mnist-5k`` digits (one quadrant as input, as in
    Pyro's ``MaskImages(num_quadrant_inputs=1)``): each row is Pyro's ``input`` image (the
    bottom-left quadrant, -1 elsewhere) stacked above its ``output`` image (the other three
    quadrants, -1 in the input quadrant), ``(N, 56, 28)``; cvae.py splits them again.
``mnist_small.npz``
    A subset of ``mnist-5k`` (28x28, with digit labels) for the MNIST programs;
    ``mnist_small_x.npz`` is the same without labels.
``prodlda.npz``
    Word counts ``(N, V)`` drawn from a small synthetic topic model (logistic-normal topic
    proportions, Dirichlet topics, Multinomial documents of 30-80 words).
``cevae_x.npz`` / ``cevae_xt.npz``
    Louizos et al.'s synthetic causal data: a binary confounder z, x ~ N(z, ...) with 5
    features, a binary treatment t ~ Bernoulli(0.75 z + 0.25 (1 - z)); ``cevae_xt`` holds t
    as ``y_train``/``y_test`` (0/1 class ids), ``cevae_x`` has x only.
``dmm.npz``
    Zero-padded binary sequences (10 steps of 8 notes, lengths 3-10) as ``sequences_*`` and
    their lengths as ``sequence_lengths_*``: inputs by name for Pyro's DMM (issue 28).
``air.npz`` (``save_multi_mnist``, not written by ``main``)
    Multi-MNIST-like canvases for Pyro's AIR (the shape of Pyro's ``multi_mnist.load``):
    ``(N, 50, 50)`` in [0, 1], each with 0-2 ``mnist-5k`` digits (28x28) at random
    positions, overlaps taking the maximum; the digit counts as ``counts_*``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def _mnist(n_train: int, n_test: int):
    from ppl_vae import data

    ds = data.load("mnist-5k")
    x_tr = ds.x_train[:n_train].numpy().reshape(-1, 28, 28)
    x_te = ds.x_test[:n_test].numpy().reshape(-1, 28, 28)
    y_tr = ds.y_train[:n_train].numpy()
    y_te = ds.y_test[:n_test].numpy()
    return x_tr, y_tr, x_te, y_te


def quadrants(images: np.ndarray, mask_with: float = -1.0) -> np.ndarray:
    """Pyro's MaskImages(num_quadrant_inputs=1): ``input`` stacked above ``output``."""
    out = images.copy()
    h, w = images.shape[1:]
    out[:, h // 2 :, : w // 2] = mask_with
    inp = images.copy()
    inp[out != mask_with] = mask_with
    return np.concatenate([inp, out], axis=1).astype(np.float32)


def topic_counts(n: int, vocab: int = 120, topics: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    beta = np.random.default_rng(1000).dirichlet(  # the same topics for every split
        np.full(vocab, 0.1), size=topics
    )  # topics x vocab
    logtheta = rng.normal(size=(n, topics))
    theta = np.exp(logtheta) / np.exp(logtheta).sum(-1, keepdims=True)
    lengths = rng.integers(30, 81, size=n)
    return np.stack(
        [rng.multinomial(m, p / p.sum()) for m, p in zip(lengths, theta @ beta)]
    ).astype(np.float32)


def causal(n: int, seed: int = 0, features: int = 5):
    rng = np.random.default_rng(seed)
    z = rng.binomial(1, 0.5, size=n)
    x = rng.normal(z[:, None], 5 * z[:, None] + 3 * (1 - z[:, None]), size=(n, features))
    t = rng.binomial(1, 0.75 * z + 0.25 * (1 - z))
    return x.astype(np.float32), t.astype(np.int64)


def sequences(n: int, steps: int = 10, notes: int = 8, seed: int = 0):
    """Zero-padded binary sequences of lengths 3..steps (a sticky chain of notes: each
    note flips with probability 0.1 per step) and their lengths; the first row has the
    full length."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, steps + 1, size=n)
    lengths[0] = steps
    x = np.zeros((n, steps, notes), np.float32)
    for i, length in enumerate(lengths):
        state = rng.random(notes) < 0.3
        for t in range(length):
            state = state ^ (rng.random(notes) < 0.1)
            x[i, t] = state
    return x, lengths.astype(np.int64)


def save_sequences(path: str | Path, n_train: int, n_test: int) -> Path:
    """``dmm.npz``: ``sequences_*`` and ``sequence_lengths_*`` (Pyro's names in dmm.py)."""
    (s_tr, l_tr), (s_te, l_te) = sequences(n_train, seed=0), sequences(n_test, seed=1)
    np.savez(
        path,
        sequences_train=s_tr,
        sequence_lengths_train=l_tr,
        sequences_test=s_te,
        sequence_lengths_test=l_te,
    )
    return Path(path)


def multi_mnist(n: int, seed: int = 0, size: int = 50, most: int = 2):
    """``n`` canvases of ``size`` x ``size`` with 0..``most`` digits each, and the counts."""
    rng = np.random.default_rng(seed)
    digits = _mnist(1000, 0)[0]
    canvases = np.zeros((n, size, size), dtype=np.float32)
    counts = rng.integers(0, most + 1, size=n)
    for canvas, count in zip(canvases, counts):
        for digit in digits[rng.integers(len(digits), size=count)]:
            top, left = rng.integers(0, size - 28 + 1, size=2)
            window = canvas[top : top + 28, left : left + 28]
            np.maximum(window, digit, out=window)
    return canvases, counts.astype(np.int64)


def save_multi_mnist(path: str | Path, n_train: int, n_test: int) -> Path:
    """``air.npz``: canvases as ``x_*``, digit counts as ``counts_*``."""
    (x_tr, c_tr), (x_te, c_te) = multi_mnist(n_train, seed=0), multi_mnist(n_test, seed=1)
    np.savez(path, x_train=x_tr, x_test=x_te, counts_train=c_tr, counts_test=c_te)
    return Path(path)


def main(out_dir: str | Path, n_train: int = 400, n_test: int = 100) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr, x_te, y_te = _mnist(n_train, n_test)
    paths = {}

    def save(name, **arrays):
        paths[name] = out / f"{name}.npz"
        np.savez(paths[name], **arrays)

    save("mnist_small", x_train=x_tr, x_test=x_te, y_train=y_tr, y_test=y_te)
    save("mnist_small_x", x_train=x_tr, x_test=x_te)
    save("cvae", x_train=quadrants(x_tr), x_test=quadrants(x_te))
    save("prodlda", x_train=topic_counts(n_train, seed=0), x_test=topic_counts(n_test, seed=1))
    cx_tr, ct_tr = causal(n_train, seed=0)
    cx_te, ct_te = causal(n_test, seed=1)
    save("cevae_x", x_train=cx_tr, x_test=cx_te)
    save("cevae_xt", x_train=cx_tr, x_test=cx_te, y_train=ct_tr, y_test=ct_te)
    paths["dmm"] = save_sequences(out / "dmm.npz", n_train // 4, n_test // 4)
    return paths


if __name__ == "__main__":
    for name, path in main(sys.argv[1] if len(sys.argv) > 1 else ".").items():
        print(name, path)
