"""The one standard error of a mean against scipy's ``sem`` on values it was not tuned on."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch

from ppl_vae.measure.stats import mean_and_se, standard_error, standard_error_from_moments


@pytest.mark.parametrize("n", [2, 7, 1000])
def test_the_standard_error_is_scipys_sem(n):
    v = torch.randn(n, generator=torch.Generator().manual_seed(n)).exp() * 3 - 100
    expected = float(scipy.stats.sem(v.double().numpy()))
    assert standard_error(v) == pytest.approx(expected, rel=1e-12)
    assert mean_and_se(v) == pytest.approx((float(v.double().mean()), expected), rel=1e-12)
    moments = standard_error_from_moments(v.double().mean(), (v.double() ** 2).mean(), n)
    assert moments == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_values_have_none(n):
    assert standard_error(torch.ones(n)) is None
    assert standard_error_from_moments(1.0, 1.0, n) is None
    mean, se = mean_and_se(torch.full((n,), 2.0))
    assert se is None and (math.isnan(mean) if n == 0 else mean == 2.0)
