"""Shared fixtures: a clean Pyro state per test, small data sets, and a trained tiny run."""

from __future__ import annotations

import pyro
import pytest
import torch

from ppl_vae import data


@pytest.fixture(autouse=True)
def clean_pyro():
    """Every test starts with an empty param store and a fixed seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    torch.set_num_threads(1)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def digits() -> data.Dataset:
    return data.load("digits")


@pytest.fixture(scope="session")
def synthetic() -> data.Dataset:
    return data.load("synthetic")
