"""Shared fixtures: a clean Pyro state per test, small data sets, and a trained tiny run."""

from __future__ import annotations

import os
import shutil

import pyro
import pytest
import torch
from hypothesis import settings

from ppl_vae import data
from ppl_vae.infer.config import TrainConfig
from ppl_vae.runs.config import RunConfig
from ppl_vae.runs.train import train_run

#: Pyro's programs are data for tests/test_pyro_programs.py, not tests: collecting their
#: doctests would import them (and put their folder, with its `utils` package, on sys.path).
collect_ignore = ["pyro_programs"]

# Property-based tests draw the same examples on every run (CI must not pass or fail by
# luck); a bug they find is then found every time. HYPOTHESIS_PROFILE=explore searches
# afresh.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def private_config_home(tmp_path_factory):
    """The suite never reads or writes the user's own trust list: every process it starts
    (CLI cases, subprocesses) inherits a private ``XDG_CONFIG_HOME``; a test that needs
    another one sets it with monkeypatch. Per xdist worker, so workers never share it."""
    old = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("xdg-config"))
    yield
    if old is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = old


@pytest.fixture(scope="session", autouse=True)
def figures_in_process():
    """Every run of the suite draws its figures in its own process (``PPL_VAE_FIGURE_WORKER=0``):
    the suite runs one test file per core, so a second process per run would only add its
    imports (about 0.5 s of CPU a run). tests/figures/test_worker.py tests the worker itself,
    with the variable removed, and that both draw the same bytes."""
    from ppl_vae.figures.worker import ENV

    old = os.environ.get(ENV)
    os.environ[ENV] = "0"
    yield
    if old is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = old


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory):
    """The suite never writes the user's cache folder either: the feature classifiers of
    ``--generation`` go to a private ``PPL_VAE_CACHE_DIR`` (once per session and data set)."""
    old = os.environ.get("PPL_VAE_CACHE_DIR")
    os.environ["PPL_VAE_CACHE_DIR"] = str(tmp_path_factory.mktemp("ppl-vae-cache"))
    yield
    if old is None:
        os.environ.pop("PPL_VAE_CACHE_DIR", None)
    else:
        os.environ["PPL_VAE_CACHE_DIR"] = old


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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A run directory of a small VAE trained 3 epochs on digits, shared by the tests of
    the commands that read runs (evaluate, analyze)."""
    out = tmp_path_factory.mktemp("runs") / "vae"
    cfg = RunConfig(
        model="vae",
        model_args={"latent_dim": 2, "hidden": [32]},
        train=TrainConfig(epochs=3, progress=False, device="cpu"),
    )
    train_run(cfg, out)
    return out


@pytest.fixture
def run_copy(tiny_run, tmp_path, monkeypatch):
    """A copy of the shared tiny VAE run as ``run``, the working folder its parent: the
    commands that read runs are called with the relative path ``run``, as a user would."""
    shutil.copytree(tiny_run, tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "run"


def pytest_collection_modifyitems(config, items):
    """The tests marked ``slow`` are handed out first (a stable sort), so that under
    ``pytest -n`` the long ones start at once and the short ones fill the gaps after them:
    the run ends when the last short test does, not when a long one started late does."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
