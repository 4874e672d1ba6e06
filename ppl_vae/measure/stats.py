r"""The standard error of a mean: the one definition every estimate the suite reports uses.

For values :math:`v_1..v_n` (one per example: a log-likelihood, an ELBO),
:math:`\mathrm{se} = s / \sqrt{n}` with the unbiased sample standard deviation :math:`s`;
undefined (None) for fewer than two values.

    >>> import torch
    >>> mean_and_se(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    (2.5, 0.6454972243679028)
    >>> standard_error(torch.tensor([1.0]))
"""

from __future__ import annotations

import math

import torch


def standard_error(values: torch.Tensor) -> float | None:
    """``std(values, unbiased) / sqrt(n)``; None for fewer than two values."""
    n = values.numel()
    if n < 2:
        return None
    return float(values.double().std() / math.sqrt(n))


def standard_error_from_moments(mean: float, mean_sq: float, n: int) -> float | None:
    r"""The same standard error from running sums: the mean of the values and of their squares
    over ``n`` values (variance :math:`(\overline{v^2} - \bar v^2)\, n / (n - 1)`)."""
    if n < 2:
        return None
    variance = (float(mean_sq) - float(mean) ** 2) * n / (n - 1)
    return math.sqrt(max(variance, 0.0) / n)


def mean_and_se(values: torch.Tensor) -> tuple[float, float | None]:
    """The mean of ``values`` and its standard error."""
    return float(values.double().mean()), standard_error(values)
