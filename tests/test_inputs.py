"""Inputs by name (:mod:`ppl_vae.inputs`): parameters filled from arrays of their names,
``--arg`` renames and JSON constants, defaults kept, a declared per-batch input hook; and
every mistake one ``error:`` line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ppl_vae.cli import main
from ppl_vae.errors import UserError
from ppl_vae.inputs import Binder, Inputs

BATCH = {"feats": torch.rand(3, 4), "n": torch.tensor([1, 2, 3]), "x": torch.rand(3, 2)}


def program(feats, n, scale=1.0, offset=0.0, *, tag=None): ...


def bind(inputs=(), hook=None, model=program, guide=program):
    binder = Binder(model, guide, Inputs.parse(list(inputs), BATCH), hook)
    return binder(BATCH), binder.bound


def test_parameters_are_filled_by_name_and_trailing_defaults_kept():
    args, bound = bind()
    assert args == (BATCH["feats"], BATCH["n"])  # scale, offset: the function's own defaults
    assert bound == {
        "feats": "array feats",
        "n": "array n",
        "scale": "default",
        "offset": "default",
    }


def test_a_rename_and_constants_fill_parameters_defaults_before_them_passed():
    args, bound = bind(["n=x", "offset=2.5"])
    assert args[1] is BATCH["x"] and args[2:] == (1.0, 2.5)  # scale: its default, explicitly
    assert bound["n"] == "array x" and bound["offset"] == "constant 2.5"
    args, _ = bind(['scale={"num_topics": 8, "names": ["a"]}'])
    assert args[2].num_topics == 8 and args[2]["names"] == ["a"]  # a Namespace-like dict


def test_from_python_a_string_naming_no_array_and_any_object_are_constants():
    w = torch.ones(2)
    inputs = Inputs.parse({"n": "x", "scale": "fast", "offset": w}, BATCH, text=False)
    binder = Binder(program, program, inputs)
    args = binder(BATCH)
    assert args[1] is BATCH["x"] and args[2] == "fast" and args[3] is w
    assert (
        binder.bound["scale"] == 'constant "fast"' and binder.bound["offset"] == "constant a Tensor"
    )


def test_a_hook_fills_parameters_from_its_own_named_inputs():
    def hook(feats, x, k=2):  # a tuple: the model's parameters in order
        return feats[:, :k], x.sum(-1)

    args, bound = bind(["k=3"], hook=hook)
    assert args[0].shape == (3, 3) and torch.equal(args[1], BATCH["x"].sum(-1))
    assert bound["feats"] == "input hook" and bound["hook.k"] == "constant 3"
    args, _ = bind(hook=lambda feats: {"n": feats[:, 0]})  # a dict: by name
    assert torch.equal(args[1], BATCH["feats"][:, 0])


def raises(exc):
    def hook(feats):
        raise exc

    return hook


MISTAKES = {
    "an --arg naming no parameter": (dict(inputs=["nope=1"]), "--arg nope=... names no param"),
    "an --arg neither array nor JSON": (dict(inputs=["n=feet"]), "names no array of the data"),
    "not PARAM=VALUE": (dict(inputs=["=3"]), "is not PARAM=ARRAY or PARAM=VALUE"),
    "a parameter nothing fills": (
        dict(model=lambda feats, lengths: None, guide=lambda feats, lengths: None),
        "parameter lengths of the model is filled by no array",
    ),
    "model and guide take different parameters": (
        dict(guide=lambda n, feats: None),
        "both take the same parameters",
    ),
    "a hook that raises": (
        dict(hook=raises(IndexError("index 7 is out of bounds\nsecond line"))),
        "the input hook hook failed on a batch of 3 examples: IndexError: index 7",
    ),
    "a hook returning too many values": (
        dict(hook=lambda feats: (feats,) * 5),
        "returned 5 values; it must return a tuple of at most 4",
    ),
    "a hook returning unknown names": (
        dict(hook=lambda feats: {"lengths": feats}),
        "returned a dict with lengths",
    ),
    "a hook returning neither": (dict(hook=lambda feats: "batch"), "returned str"),
    "a hook returning the wrong shape": (
        dict(hook=lambda feats: (feats[:2, :2],)),
        r"returned feats of shape \(2, 2\) for a batch of 3 examples",
    ),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_each_mistake_is_one_line(case):
    kwargs, match = MISTAKES[case]
    with pytest.raises(UserError, match=match) as info:
        bind(**kwargs)
    assert "\n" not in str(info.value)


PROGRAM = """
import pyro, pyro.distributions as dist, torch
from torch import nn


class Pair(nn.Module):
    def __init__(self, hook="none"):
        super().__init__()
        self.dec = nn.Linear(2, 4)
        self.enc = nn.Linear(4, 4)
        if hook == "raises":
            self.batch_inputs = lambda feats: feats[100]
        elif hook == "wrong":
            self.batch_inputs = lambda feats: (feats, feats, feats)

    def model(self, feats, scale=1.0):
        pyro.module("dec", self.dec)
        with pyro.plate("data", feats.shape[0]):
            z = pyro.sample("z", dist.Normal(feats.new_zeros(feats.shape[0], 2), 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(self.dec(z), scale).to_event(1), obs=feats)

    def guide(self, feats, scale=1.0):
        pyro.module("enc", self.enc)
        with pyro.plate("data", feats.shape[0]):
            loc, log_s = self.enc(feats).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_s.exp()).to_event(1))


MODEL = Pair
"""


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        feats_train=rng.normal(size=(40, 4)),
        feats_test=rng.normal(size=(10, 4)),
        n_train=np.arange(40),
        n_test=np.arange(10),
    )
    (tmp_path / "pair.py").write_text(PROGRAM)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path


def test_a_program_by_name_trains_with_a_constant_from_the_command_line(folder, capsys):
    rc = main("train pair.py --data d.npz --epochs 1 --arg scale=0.5 --out runs/p".split())
    assert rc == 0, capsys.readouterr()
    config = json.loads(Path("runs/p/config.json").read_text())
    assert config["inputs"] == {"scale": "0.5"}
    assert config["bound"] == {"feats": "array feats", "scale": "constant 0.5"}


CLI_MISTAKES = {
    "--arg naming no parameter": ("--arg lengths=n", "--arg lengths=... names no parameter"),
    "--arg neither array nor JSON": ("--arg scale=big", "names no array of the data"),
    "a hook that raises": ('--set hook="raises"', "the input hook <lambda> failed"),
    "a hook of the wrong shape": ('--set hook="wrong"', "returned 3 values"),
    "--image-shape of another size": ("--image-shape 1,3,3", "each example has 4"),
}


@pytest.mark.parametrize("case", list(CLI_MISTAKES))
def test_each_cli_mistake_is_one_error_line_exit_2_nothing_written(folder, capsys, case):
    extra, match = CLI_MISTAKES[case]
    rc = main(f"train pair.py --data d.npz --epochs 1 {extra} --out runs/p".split())
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error:"), err
    assert match in err
    assert not Path("runs").exists()


def test_image_shape_gives_flat_rows_their_pictures_from_the_command_line(tmp_path, monkeypatch):
    from ppl_vae import data

    digits = data.load("digits")  # (N, 64) rows, saved flat: no pictures of their own
    np.savez(tmp_path / "flat.npz", x_train=digits.x_train[:200], x_test=digits.x_test[:50])
    monkeypatch.chdir(tmp_path)
    line = "train vae --data flat.npz --image-shape 1,8,8 --epochs 1 --no-progress --out runs/v"
    assert main(line.split()) == 0
    assert json.loads(Path("runs/v/config.json").read_text())["image_shape"] == [1, 8, 8]
    assert Path("runs/v/reconstructions.png").is_file()


HOSTILE_FILES = {
    "object arrays": (
        {"feats_train": np.array([{"a": 1}] * 4, dtype=object), "feats_test": np.zeros((2, 4))},
        "must be numeric",
    ),
    "hundreds of arrays": (
        {f"a{i}_{s}": np.zeros(3) for i in range(200) for s in ("train", "test")},
        "over the limit",
    ),
    "lengths disagree between names": (
        {
            "feats_train": np.zeros((40, 4)),
            "feats_test": np.zeros((10, 4)),
            "n_train": np.arange(39),
            "n_test": np.arange(10),
        },
        "disagree on the number of examples",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_FILES))
def test_each_hostile_data_file_is_one_error_line_exit_2_nothing_written(folder, capsys, case):
    arrays, match = HOSTILE_FILES[case]
    np.savez("bad.npz", **arrays)
    rc = main("train pair.py --data bad.npz --epochs 1 --out runs/p".split())
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error:") and match in err, err
    assert not Path("runs").exists()


def test_labels_hides_the_y_array_of_named_arrays(folder):
    from ppl_vae.runs.build import load_data
    from ppl_vae.runs.config import RunConfig

    rng = np.random.default_rng(1)
    y = np.arange(40) % 2
    np.savez(
        "y.npz",
        feats_train=rng.normal(size=(40, 4)),
        feats_test=np.zeros((4, 4)),
        y_train=y,
        y_test=y[:4],
    )
    ds = load_data(RunConfig(model="pair.py", data="y.npz", labels=10))
    kept = ds.y_train["y"]
    assert int((kept >= 0).sum()) == 10 and torch.equal(kept[kept >= 0], torch.tensor(y)[kept >= 0])
    assert torch.equal(ds.y_train["feats"], torch.tensor(np.load("y.npz")["feats_train"]).float())


FUNCTIONS = """
import pyro, pyro.distributions as dist, torch


def batch_inputs(feats, n):  # the file's per-batch input hook
    return feats[:, :2], n.float()


def model(obs, weight):
    loc = pyro.param("loc", torch.zeros(2))
    with pyro.plate("data", obs.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(loc + z[:, None], 1.0).to_event(1), obs=obs)


def guide(obs, weight):
    w = pyro.param("w", torch.zeros(2))
    with pyro.plate("data", obs.shape[0]):
        pyro.sample("z", dist.Normal(obs @ w, 1.0))
"""


def test_a_file_of_functions_declares_its_hook_at_module_level(folder, capsys):
    Path("functions.py").write_text(FUNCTIONS)
    rc = main("train functions.py --data d.npz --epochs 1 --out runs/f".split())
    assert rc == 0, capsys.readouterr()
    bound = json.loads(Path("runs/f/config.json").read_text())["bound"]
    assert bound["obs"] == "input hook" and bound["batch_inputs.n"] == "array n"
