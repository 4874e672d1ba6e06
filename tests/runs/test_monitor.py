"""Live monitoring: history.jsonl as training goes, TensorBoard event files read back with
TensorBoard's own reader, both surviving a killed and resumed run without duplicates."""

from __future__ import annotations

import json

import pytest
from helpers import cli_cases

from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.runs import monitor
from ppl_vae.runs.config import RunConfig
from ppl_vae.runs.rundir import RunDir
from ppl_vae.runs.train import train_run

pytestmark = pytest.mark.slow  # one module fixture does the expensive work

# digits: 1437 training examples, batch 32 -> 45 steps an epoch; epoch 2 is steps 46..90.
TRAIN = ["train", "vae", "--latent-dim", "2", "--hidden", "16", "--epochs", "2"]
TRAIN += ["--no-progress", "--device", "cpu", "--checkpoint-every", "10", "--tensorboard"]
#: Killed (like kill -9) at the first step of epoch 2, just after epoch 1's line was
#: appended, and mid-epoch 2, after a mid-epoch checkpoint; each then resumed.
KILLS = {"epoch-start": 45, "mid-epoch": 55}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A whole run and the killed-and-resumed ones, all in one fresh folder, relative paths."""
    pytest.importorskip("tensorboard")
    cwd = tmp_path_factory.mktemp("monitor")
    cases = [{"argv": [*TRAIN, "--out", "whole"], "cwd": cwd}]
    for name, step in KILLS.items():
        cases.append({"argv": [*TRAIN, "--out", name], "cwd": cwd, "exit_at_step": step})
        cases.append({"argv": [*TRAIN, "--out", name, "--resume"], "cwd": cwd})
    results = cli_cases(cases)
    assert results[0].returncode == 0, results[0].stderr
    for name, killed, resumed in zip(KILLS, results[1::2], results[2::2]):
        assert killed.returncode == 137, (name, killed.stderr)
        assert resumed.returncode == 0, (name, resumed.stderr)
    return cwd


def history(run) -> list[dict]:
    return json.loads((run / "metrics.json").read_text())["history"]


def events(run):
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(
        str(run / monitor.TENSORBOARD), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


@pytest.mark.parametrize("name", ["whole", *KILLS])
def test_history_jsonl_is_metrics_history_line_for_line_and_in_the_manifest(runs, name):
    run = runs / name
    lines = (run / monitor.HISTORY).read_text().splitlines()
    assert [json.loads(line) for line in lines] == history(run)
    assert [r["epoch"] for r in history(run)] == [1, 2]  # no record of a killed epoch twice
    entry = RunDir(run).manifest()[monitor.HISTORY]
    assert entry["size"] == (run / monitor.HISTORY).stat().st_size


@pytest.mark.parametrize("name", KILLS)
def test_a_killed_and_resumed_run_records_what_the_whole_run_records(runs, name):
    assert history(runs / name) == history(runs / "whole")  # resumption is bit for bit


@pytest.mark.parametrize("name", ["whole", *KILLS])
def test_tensorboard_scalars_equal_the_metrics_history_once_per_step(runs, name):
    run = runs / name
    acc = events(run)
    tags = set(acc.Tags()["scalars"])
    recorded = history(run)
    assert {"test_elbo", "rate", "distortion", "kl_per_dim/0", "kl_per_dim/1"} <= tags
    assert {"active_units", "beta", "lr", "step_seconds"} <= tags
    for tag in tags - {"lr", "step_seconds"}:
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        want = [(r["step"], monitor.scalars(r)[tag]) for r in recorded]
        assert [s for s, _ in got] == [s for s, _ in want], tag  # each step once, in order
        for (_, g), (_, w) in zip(got, want):
            assert g == pytest.approx(w, rel=1e-6, abs=1e-6), tag
    assert [e.step for e in acc.Scalars("lr")] == [45, 90]
    assert all(e.value == pytest.approx(1e-3) for e in acc.Scalars("lr"))
    assert all(e.value > 0 for e in acc.Scalars("step_seconds"))
    for tag in ("reconstructions", "samples"):  # first and last epoch
        assert [e.step for e in acc.Images(tag)][-1] == 90, tag
        assert acc.Images(tag)[0].step == 45 or name != "whole"
    files = {p.relative_to(run).as_posix() for p in (run / "tensorboard").iterdir()}
    assert files <= set(RunDir(run).manifest())  # --overwrite removes them


def test_tensorboard_holds_the_configuration_as_text(runs):
    acc = events(runs / "whole")
    (event,) = acc.Tensors("config/text_summary")
    text = event.tensor_proto.string_val[0].decode()
    assert json.loads(text.strip("`\njson"))["model"] == "vae"


def test_history_log_repairs_a_file_cut_short_by_rename(tmp_path):
    records = [{"epoch": k, "step": 10 * k, "test_elbo": -1.0 / k} for k in (1, 2, 3)]
    run = RunDir(tmp_path / "run")
    with run.lock():
        run.prepare(resume=False, overwrite=False)
        log = monitor.HistoryLog(run)
        log.start(resume=False)
        log(records[0], records[:1])
        # killed after epoch 2's checkpoint, before its line was whole
        (tmp_path / "run" / monitor.HISTORY).write_text(
            monitor.history_text(records[:1]) + '{"epoch": 2, "st'
        )
        resumed = monitor.HistoryLog(run)
        resumed.start(resume=True)
        resumed(records[2], records)  # the checkpoint's history is the truth
        assert monitor.read_history(tmp_path / "run" / monitor.HISTORY) == records
        resumed.finish(records)
    assert monitor.read_history(tmp_path / "run" / monitor.HISTORY) == records


def test_image_grid_places_each_image_in_its_cell():
    import torch

    x = torch.stack([torch.full((6,), float(k) / 3) for k in range(4)])
    grid = monitor.image_grid(x, (1, 2, 3), nrow=2)
    assert grid.shape == (1, 2 * 3 + 1, 2 * 4 + 1)
    assert grid[0, 1, 1] == 0.0 and grid[0, 4, 5] == 1.0 and grid[0, 0, 0] == 1.0


def test_tensorboard_without_the_package_is_one_error_before_any_write(tmp_path, monkeypatch):
    monkeypatch.setattr(monitor.importlib.util, "find_spec", lambda name: None)
    cfg = RunConfig(model="vae", train=TrainConfig(epochs=1, progress=False))
    with pytest.raises(UserError, match=r"pip install 'ppl-vae\[tensorboard\]'"):
        train_run(cfg, tmp_path / "run", tensorboard=True)
    assert not (tmp_path / "run").exists()


def test_tensorboard_learning_rate_is_the_one_the_trainer_stepped_with(digits):
    from ppl_vae.models.vae import VAE

    from ppl_vae.infer.trainer import fit

    cfg = RunConfig(
        model="vae",
        train=TrainConfig(epochs=1, progress=False, lr_schedule="cosine", batch_size=256),
    )
    vae = VAE(digits.x_dim, latent_dim=2, hidden=[8])
    result = fit(vae.model, vae.guide, digits, cfg.train)
    board = monitor.TensorBoardLog(None, cfg, digits)
    assert board.learning_rate(result.step) == result.optimizer.param_groups[0]["lr"]
    assert board.learning_rate(result.step) < cfg.train.lr  # the cosine has moved
