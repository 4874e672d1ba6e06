"""The configuration: one ``resolve`` per job (validated once), flags generated from the
fields, ``ppl-vae train --config FILE`` (flags win; a run's ``config.json`` reproduces the
run), hostile config files and ``--set`` values refused in one line with nothing written."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from ppl_vae import cli
from ppl_vae.cli import main
from ppl_vae.cli import train as train_command
from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.runs import train as train_job
from ppl_vae.runs.config import RunConfig, resolve

SMALL = ["--latent-dim", "2", "--hidden", "16", "--batch-size", "256", "--no-progress"]


def typed_config(argv: list[str]) -> RunConfig:
    """What ``ppl-vae train ARGV`` hands the job: the typed configuration."""
    return train_command.config(cli.parser().parse_args(["train", *argv]))


def one_error_line(argv: list[str], capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("model", ["vae", "pca"])  # pca recommends L-BFGS settings
def test_prepare_validates_the_training_options_once(model, monkeypatch):
    """One validation per job, whether or not the model recommends settings."""
    calls = []
    original = TrainConfig.validate

    def counting(self):
        calls.append(self)
        return original(self)

    monkeypatch.setattr(TrainConfig, "validate", counting)
    small = SMALL if model == "vae" else SMALL[:2] + SMALL[4:]  # pca has no hidden layer
    cfg, *_ = train_job.prepare(typed_config([model, "--epochs", "2", *small]))
    assert len(calls) == 1
    assert cfg.train.epochs == 2 and cfg.train.schedule_epochs == 2
    if model == "pca":  # --batch-size typed: the recommended L-BFGS yields to Adam
        assert cfg.train.optimizer == "adam"


def test_resolve_reads_its_inputs_and_writes_none():
    typed = RunConfig(train=TrainConfig(lr=0.5, epochs=3), typed=frozenset({"epochs"}))
    before = dataclasses.asdict(typed)
    out = resolve(typed, recommended={"lr": 1.0, "epochs": 9, "elbo": "trace"})
    assert (out.train.lr, out.train.epochs, out.train.elbo) == (1.0, 3, "trace")
    assert dataclasses.asdict(typed) == before and out.train_explicit == ["epochs"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.train.lr = 2.0  # type: ignore[misc]


def test_every_flag_is_made_from_its_fields_metadata():
    actions = {
        a.dest: a
        for a in cli.parser()._subparsers._group_actions[0].choices["train"]._actions  # noqa: SLF001
    }
    for f in dataclasses.fields(TrainConfig):
        if f.metadata["cli"] is None:
            assert f.name not in actions
            continue
        action = actions[f.name]
        default = getattr(TrainConfig(), f.name)
        assert action.default == default and action.help == f.metadata["help"]
        assert tuple(action.choices or ()) == f.metadata["choices"]


def test_a_runs_config_json_reproduces_the_run(tmp_path, capsys):
    first, again = tmp_path / "first", tmp_path / "again"
    argv = ["vae", "--epochs", "2", "--beta", "2", "--seed", "3", *SMALL]
    assert main(["train", *argv, "--out", str(first)]) == 0
    assert main(["train", "--config", str(first / "config.json"), "--out", str(again)]) == 0
    read = [json.loads((d / "config.json").read_text()) for d in (first, again)]
    assert read[0] == read[1]
    histories = [json.loads((d / "metrics.json").read_text())["history"] for d in (first, again)]
    keys = ("test_elbo", "train_elbo", "rate", "beta")
    assert [[h[k] for k in keys] for h in histories[0]] == [
        [h[k] for k in keys] for h in histories[1]
    ]


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_a_config_file_sets_the_options_and_typed_flags_win(suffix, tmp_path):
    body = {"model": "vae", "epochs": 5, "beta": 2.0, "latent_dim": 2, "lr_schedule": "cosine"}
    body |= {"train": {"batch-size": 64}, "model_args": {"hidden": [16]}}
    path = tmp_path / f"c{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(body))
    else:
        path.write_text(
            'model = "vae"\nepochs = 5\nbeta = 2.0\nlatent_dim = 2\nlr_schedule = "cosine"\n'
            "[train]\nbatch-size = 64\n[model_args]\nhidden = [16]\n"
        )
    cfg = typed_config(["--config", str(path), "--beta", "4", "--no-progress"])
    t = cfg.train
    assert (t.epochs, t.beta, t.batch_size, t.lr_schedule, t.progress) == (
        5,
        4.0,
        64,
        "cosine",
        False,
    )
    assert cfg.model == "vae" and cfg.model_args == {"hidden": [16], "latent_dim": 2}
    assert cfg.train_explicit == ["epochs", "batch_size", "lr_schedule", "beta"]
    assert typed_config(["ae", "--config", str(path)]).model == "ae"  # the flag wins


HOSTILE = {
    "unknown key": ("c.toml", "epochs = 2\nwings = 3\n", "unknown key 'wings'"),
    "unknown train key": ("c.json", '{"train": {"epoch": 2}}', "unknown key 'epoch'"),
    "wrong type": ("c.toml", 'model = "vae"\nepochs = "many"\n', "--epochs must be a whole"),
    "wrong choice": ("c.json", '{"model": "vae", "elbo": "magic"}', "unknown elbo 'magic'"),
    "model_args not a table": ("c.json", '{"model_args": [1]}', "model_args must be a table"),
    "bad data type": ("c.toml", "data = 3\n", "data must be a non-empty string"),
    "not TOML": ("c.toml", "epochs = = 2\n", "is not valid TOML"),
    "not JSON": ("c.json", "{epochs: 2}", "is not valid JSON"),
    "a list": ("c.json", "[1, 2]", "must hold a table"),
    "huge": ("c.toml", "# " + "x" * (1 << 20) + "\n", "over the 1 MiB"),
    "deep TOML": ("c.toml", "a = " + "[" * 9999 + "]" * 9999 + "\n", "nests deeper"),
    "deep JSON": ("c.json", "[" * 9999 + "]" * 9999, "nests deeper"),
    "a link": ("c.toml", None, "is a symlink"),
    "no model": ("c.toml", "epochs = 2\n", "train needs a MODEL"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_config_file_is_one_line_and_writes_nothing(case, tmp_path, capsys):
    name, text, expected = HOSTILE[case]
    path = tmp_path / name
    if text is None:
        (tmp_path / "real.toml").write_text('model = "vae"\n')
        os.symlink(tmp_path / "real.toml", path)
    else:
        path.write_text(text)
    out = tmp_path / "out"
    line = one_error_line(["train", "--config", str(path), "--out", str(out)], capsys)
    assert expected in line and not out.exists()


@pytest.mark.parametrize("value", ["invariances=['r','t']", "likelihood=gaussian", "l1="])
def test_set_values_that_are_not_json_are_refused_saying_so(value, tmp_path, capsys):
    out = tmp_path / "out"
    line = one_error_line(["train", "vae", "--set", value, "--out", str(out)], capsys)
    assert "is not JSON" in line and not out.exists()


def test_set_takes_a_json_string():
    cfg = typed_config(["vae", "--set", 'likelihood="gaussian"'])
    assert cfg.model_args == {"likelihood": "gaussian"}
    with pytest.raises(UserError, match="is not JSON"):
        typed_config(["vae", "--set", "likelihood=gaussian"])
