"""Checkpoints: safetensors + JSON, atomic, verified, never unpickled."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ppl_vae.errors import UserError
from ppl_vae.runs import checkpoint
from ppl_vae.runs.rundir import RunDir


def optimizer_state() -> dict:
    w = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.Adam([w], lr=0.01)
    w.sum().backward()
    opt.step()
    return opt.state_dict()


def test_round_trip_keeps_tensors_and_key_types(tmp_path):
    record = {"step": 7, "history": [{"elbo": -1.5}], "optimizer": optimizer_state()}
    checkpoint.save(tmp_path, record)
    back = checkpoint.load(tmp_path)
    assert back["step"] == 7 and back["history"] == [{"elbo": -1.5}]
    state = back["optimizer"]["state"]
    assert list(state) == [0]  # integer keys survive JSON
    for name, value in record["optimizer"]["state"][0].items():
        assert torch.equal(state[0][name], value), name
    groups = record["optimizer"]["param_groups"]
    assert back["optimizer"]["param_groups"] == json.loads(json.dumps(groups))  # tuples -> lists
    # The weights file is plain safetensors; the record is plain JSON.
    body = json.loads((tmp_path / checkpoint.RECORD).read_text())
    assert set(load_file(str(tmp_path / body["weights"]))) == {
        "optimizer.state.0.step",
        "optimizer.state.0.exp_avg",
        "optimizer.state.0.exp_avg_sq",
    }


def test_a_new_save_replaces_the_old_weights_file(tmp_path):
    checkpoint.save(tmp_path, {"step": 1, "w": torch.zeros(2)})
    checkpoint.save(tmp_path, {"step": 2, "w": torch.ones(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".lock",
        "checkpoint-2.safetensors",
        "checkpoint.json",
        "manifest.json",
    ]
    assert sorted(RunDir(tmp_path).manifest()) == ["checkpoint-2.safetensors", "checkpoint.json"]
    assert torch.equal(checkpoint.load(tmp_path)["w"], torch.ones(2))


def test_weights_a_crash_left_before_the_record_go_at_the_next_save(tmp_path, monkeypatch):
    """Killed between the new weights and the record: the record still names the old
    weights; the next save removes both older files (ppl-vae wrote them), and a user's file
    of the same pattern, not in the manifest, stays."""
    checkpoint.save(tmp_path, {"step": 1, "w": torch.zeros(2)})
    (tmp_path / "checkpoint-7.safetensors").write_bytes(b"the user's")
    real = os.replace

    def killed(src, dst, *args, **kwargs):
        if Path(dst).name == checkpoint.RECORD:
            raise KeyboardInterrupt  # the weights of step 2 are renamed into place, listed
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, {"step": 2, "w": torch.ones(2)})
    monkeypatch.setattr(os, "replace", real)
    assert (tmp_path / "checkpoint-2.safetensors").is_file()
    assert sorted(RunDir(tmp_path).manifest()) == [
        "checkpoint-1.safetensors",
        "checkpoint-2.safetensors",
        "checkpoint.json",
    ]
    assert torch.equal(checkpoint.load(tmp_path)["w"], torch.zeros(2))
    checkpoint.save(tmp_path, {"step": 3, "w": torch.full((2,), 3.0)})
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == [
        "checkpoint-3.safetensors",
        "checkpoint-7.safetensors",
    ]
    assert torch.equal(checkpoint.load(tmp_path)["w"], torch.full((2,), 3.0))


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, {"step": 1, "w": torch.zeros(2)})

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "safetensors_save", broken)
    with pytest.raises(OSError):
        checkpoint.save(tmp_path, {"step": 2, "w": torch.ones(2)})
    assert torch.equal(checkpoint.load(tmp_path)["w"], torch.zeros(2))
    assert not list(tmp_path.glob(".*tmp*"))


def test_tampered_or_missing_weights_are_refused(tmp_path):
    checkpoint.save(tmp_path, {"step": 1, "w": torch.zeros(2)})
    (tmp_path / "checkpoint-1.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="do not match"):
        checkpoint.load(tmp_path)
    with pytest.raises(UserError, match="no checkpoint"):
        checkpoint.load(tmp_path / "elsewhere")


def test_a_record_naming_a_file_outside_the_run_is_refused(tmp_path):
    victim = tmp_path / "victim"
    checkpoint.save(victim, {"step": 44, "w": torch.zeros(2)})
    run = tmp_path / "run"
    checkpoint.save(run, {"step": 1, "w": torch.ones(2)})
    body = json.loads((run / checkpoint.RECORD).read_text())
    body["weights"] = "../victim/checkpoint-44.safetensors"
    body["sha256"] = json.loads((victim / checkpoint.RECORD).read_text())["sha256"]
    (run / checkpoint.RECORD).write_text(json.dumps(body))
    with pytest.raises(UserError, match="leaves the run directory"):
        checkpoint.load(run)
    assert (victim / "checkpoint-44.safetensors").is_file()


@pytest.mark.parametrize("body", ["[1, 2]", '"text"', '{"weights": 3}', "{", '{"weights": "a"}'])
def test_a_record_of_the_wrong_shape_is_one_user_error(tmp_path, body):
    checkpoint.save(tmp_path, {"step": 1, "w": torch.zeros(2)})
    (tmp_path / checkpoint.RECORD).write_text(body)
    with pytest.raises(UserError, match="not a ppl-vae checkpoint record"):
        checkpoint.load(tmp_path)
