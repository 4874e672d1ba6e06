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
    from sklearn.model_selection import train_test_split  # 3 s of import: only when hiding labels

    keep, _ = train_test_split(
        np.arange(len(y_np)), train_size=int(n), stratify=y_np, random_state=seed
    )
    out = torch.full_like(y, UNLABELLED)
    idx = torch.as_tensor(keep, device=y.device)
    out[idx] = y[idx]
    return out


def as_form(y: torch.Tensor, form: str, classes: int) -> torch.Tensor:
    """Class ids ``y`` (none hidden) in a program's declared label form (see
    :func:`ppl_vae.programs.label_form`): ids unchanged, one-hot float rows, or floats."""
    if form == "onehot":
        return torch.nn.functional.one_hot(y.long(), classes).to(torch.get_default_dtype())
    if form == "float":
        return y.to(torch.get_default_dtype())
    return y


class EpochPlan:
    """One epoch's batches for a program pair, in the label convention it declares.

    For programs without labels, or with ``ids`` labels (the suite's: ``-1`` marks a hidden
    label inside a mixed batch), the batches are slices of one permutation, as always. For
    ``onehot`` or ``float`` labels (Pyro's convention, ``examples/vae/ss_vae_M2.py``) each
    batch is homogeneous: the labelled and the unlabelled examples are permuted apart, cut
    into batches, and the labelled batches are spread evenly among the unlabelled ones; a
    labelled batch is passed as ``(x, y)`` in the declared form, an unlabelled one as
    ``(x,)`` (the program's ``y`` keeps its default ``None``).
    """

    def __init__(self, pair, y: torch.Tensor | None, n: int, batch_size: int):
        self.pair, self.y, self.n, self.batch_size = pair, y, n, batch_size
        self.labelled = pair.takes_labels and y is not None
        self.homogeneous = self.labelled and pair.label_form != "ids"
        self.flags: list[bool] = []
        if self.homogeneous:
            self.classes = int(y.max()) + 1  # one host read per epoch plan
            self._known = torch.nonzero(y >= 0).flatten()
            self._hidden = torch.nonzero(y < 0).flatten()

    def batches(self, generator: torch.Generator | None, device=None):
        """The index tensors of one epoch (``flags[i]``: whether batch ``i`` is labelled)."""
        from ppl_vae.data.dataset import minibatches

        if not self.homogeneous:
            self.flags = []
            yield from minibatches(self.n, self.batch_size, generator, device=device)
            return
        known = list(self._pick(self._known, generator, device))
        hidden = list(self._pick(self._hidden, generator, device))
        order: list[tuple[torch.Tensor, bool]] = []
        every = max(1, round((len(known) + len(hidden)) / max(len(known), 1)))
        while known or hidden:  # ss_vae_M2.py: every k-th batch is a labelled one
            if known and (not hidden or len(order) % every == 0):
                order.append((known.pop(0), True))
            else:
                order.append((hidden.pop(0), False))
        self.flags = [f for _, f in order]
        for idx, _ in order:
            yield idx

    def _pick(self, rows: torch.Tensor, generator, device):
        where = generator.device if generator is not None else "cpu"
        perm = torch.randperm(rows.shape[0], generator=generator, device=where).to(rows.device)
        out = rows[perm]
        if device is not None:
            out = out.to(device)
        return out.split(self.batch_size) if out.shape[0] else ()

    def args(self, i: int, x: torch.Tensor, idx: torch.Tensor) -> tuple:
        """The programs' arguments for batch ``i`` of the epoch (indices ``idx``): for
        programs bound by name, every per-example array sliced with ``idx``."""
        if getattr(self.pair, "binder", None) is not None:
            return self.pair.args(x[idx], None if self.y is None else self.y[idx])
        if not self.labelled:
            return (x[idx],)
        if not self.homogeneous:
            return (x[idx], self.y[idx])
        if i < len(self.flags) and self.flags[i]:
            return (x[idx], as_form(self.y[idx], self.pair.label_form, self.classes))
        return (x[idx],)


def first_batch(pair_form: str, x: torch.Tensor, y: torch.Tensor | None, size: int = 2) -> tuple:
    """``size`` examples for a pair's first trace, labelled in ``pair_form`` where ``y`` has
    known labels (their ids as they are for ``ids``). ``x`` are the rows as scored
    (:meth:`~ppl_vae.data.dataset.Dataset.scored_train`)."""
    if y is None:
        return (x[:size],)
    if not torch.is_tensor(y):  # named arrays: every array sliced with x
        return (x[:size], y[:size])
    if pair_form == "ids":
        return (x[:size], y[:size])
    known = torch.nonzero(y >= 0).flatten()[:size]
    if known.shape[0] == 0:
        return (x[:size],)
    return (x[known], as_form(y[known], pair_form, int(y.max()) + 1))
