"""One binarised test set per data set: every run of a data set, whatever its training seed,
is scored on byte-identical test inputs (the loading path a run uses, a saved run read
back by ``load_run``, ``evaluate``), while each training seed still draws its own
training images."""

from __future__ import annotations

import json

import pytest
import torch

from ppl_vae import data
from ppl_vae.infer.config import TrainConfig
from ppl_vae.runs.build import load_data, load_run
from ppl_vae.runs.config import RunConfig, read_config
from ppl_vae.runs.train import train_run


def config(seed: int, **kw) -> RunConfig:
    return RunConfig(
        model="vae",
        model_args={"latent_dim": 2, "hidden": [16]},
        binarize="dynamic",
        train=TrainConfig(epochs=1, batch_size=256, seed=seed, progress=False),
        **kw,
    )


def test_the_test_split_is_one_draw_of_the_data_set_whatever_the_training_seed(digits):
    a, b = load_data(config(0)), load_data(config(1))
    assert a.x_test.numpy().tobytes() == b.x_test.numpy().tobytes()
    assert set(a.x_test.unique().tolist()) == {0.0, 1.0}
    assert a.test_seed == b.test_seed == data.TEST_BINARIZE_SEED
    assert "(`test_binarize_seed` 7919), whatever the training seed" in data.note_on_test_set(a)
    # It is a Bernoulli(x) draw of the grey test images, not a threshold of them.
    assert not torch.equal(a.x_test, (digits.x_test > 0.5).float())
    # The training images stay seeded by the training seed.
    g0, g1 = data.shuffle_generator(0), data.shuffle_generator(1)
    assert not torch.equal(a.train_epoch(g0), b.train_epoch(g1))
    # Another test seed is another test set: the field is what decides it.
    other = load_data(config(0, test_binarize_seed=3))
    assert not torch.equal(other.x_test, a.x_test)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    top = tmp_path_factory.mktemp("seeds")
    for seed in (0, 1):
        train_run(config(seed), top / f"s{seed}")
    return top


def test_saved_runs_of_two_seeds_are_read_back_on_the_same_test_inputs(two_runs):
    saved = [json.loads((two_runs / f"s{s}" / "config.json").read_text()) for s in (0, 1)]
    assert [c["train"]["seed"] for c in saved] == [0, 1]
    assert saved[0]["test_binarize_seed"] == saved[1]["test_binarize_seed"] == 7919
    (_, ds0, _), (_, ds1, _) = (load_run(two_runs / f"s{s}") for s in (0, 1))
    assert ds0.x_test.numpy().tobytes() == ds1.x_test.numpy().tobytes()


def test_a_config_written_before_the_field_gets_the_shared_draw(two_runs, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(two_runs / "s1", old)
    body = json.loads((old / "config.json").read_text())
    del body["test_binarize_seed"]
    (old / "config.json").write_text(json.dumps(body))
    assert read_config(old).test_binarize_seed == data.TEST_BINARIZE_SEED
    _, ds, _ = load_run(old)
    _, ds0, _ = load_run(two_runs / "s0")
    assert torch.equal(ds.x_test, ds0.x_test)


@pytest.mark.parametrize("bad", [-1, 1.5, "7919", None])
def test_a_bad_test_seed_in_config_json_is_refused(two_runs, tmp_path, bad):
    import shutil

    from ppl_vae.errors import UserError

    run = tmp_path / "bad"
    shutil.copytree(two_runs / "s0", run)
    body = json.loads((run / "config.json").read_text())
    body["test_binarize_seed"] = bad
    (run / "config.json").write_text(json.dumps(body))
    with pytest.raises(UserError, match="test_binarize_seed|test-binarize-seed"):
        read_config(run)
