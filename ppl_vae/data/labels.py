"""Hiding labels for semi-supervised training: keep ``n`` labels, stratified by class.

The kept examples are a stratified random subset (``sklearn.model_selection.
train_test_split`` with ``stratify=y``), so each class keeps about ``n / C`` labels; every
other label becomes ``-1``, the suite's mark for "unlabelled" (see ``models/m2_vae.py``).

Example::

    >>> import torch
    >>> y = torch.arange(100) % 10
    >>> kept = keep_labels(y, 20, seed=0)
    >>> int((kept >= 0).sum()), torch.bincount(kept[kept >= 0]).tolist()
    (20, [2, 2, 2, 2, 2, 2, 2, 2, 2, 2])
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from ppl_vae.errors import UserError

UNLABELLED = -1


def keep_labels(y: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """A copy of ``y`` with all but ``n`` labels (stratified per class) set to ``-1``."""
    y_np = y.detach().cpu().numpy()
    classes = np.unique(y_np)
    if y.ndim != 1 or (y_np < 0).any():
        raise UserError("keep_labels needs a 1-D tensor of non-negative class labels")
    if n > len(y_np):
        raise UserError(
            f"--labels {n} is more than the {len(y_np)} training examples; keep at most "
            f"{len(y_np)} (or leave --labels out to keep them all)"
        )
    if n == len(y_np):
        return y.clone()
    if n < len(classes):
        raise UserError(
            f"cannot keep {n} labels stratified over {len(classes)} classes; "
            f"keep at least {len(classes)}"
        )
    keep, _ = train_test_split(
        np.arange(len(y_np)), train_size=int(n), stratify=y_np, random_state=seed
    )
    out = torch.full_like(y, UNLABELLED)
    idx = torch.as_tensor(keep, device=y.device)
    out[idx] = y[idx]
    return out
