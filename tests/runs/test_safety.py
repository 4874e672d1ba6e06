"""Issue 10 end to end through the CLI: nothing lost, nothing executed, nothing leaked,
every bad input one clear line. Each test runs ``ppl-vae`` in a subprocess (one forked
process per command, :func:`helpers.cli_cases`, so the imports are paid once) and compares
the file system before and after (:func:`helpers.snapshot`)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli_cases, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppl_vae import cli
from ppl_vae.runs import checkpoint
from ppl_vae.runs.rundir import RunDir

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--no-progress"]
STEPS = 45  # steps per epoch: digits' 1437 training rows in batches of 32


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> dict:
    """The environment of the commands: a private trusted list (XDG_CONFIG_HOME)."""
    return {"XDG_CONFIG_HOME": str(tmp_path_factory.mktemp("xdg"))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, home) -> Path:
    """One small finished run on digits, copied by the tests that need a run."""
    out = tmp_path_factory.mktemp("runs") / "run"
    (r,) = cli_cases([{"argv": ["train", "vae", *SMALL, "--out", out]}], home)
    assert r.returncode == 0, r.stderr
    return out


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def one_error_line(r, expect: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert expect in lines[0], lines[0]


def npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


# ------------------------------------------------------------------------ nothing lost
def test_overwrite_refuses_a_folder_holding_the_users_files(tmp_path, home):
    p = tmp_path / "p"
    (p / "src").mkdir(parents=True)
    (p / "config.json").write_text("{}")
    (p / "thesis.tex").write_text("x")
    (p / "src" / "main.c").write_text("int main;")
    before = snapshot(tmp_path)
    (r,) = cli_cases([{"argv": ["train", "vae", *SMALL, "--out", p, "--overwrite"]}], home)
    one_error_line(r, "--overwrite refuses")
    assert "thesis.tex" in r.stderr
    assert snapshot(tmp_path) == before


def test_validation_fails_before_overwrite_removes_anything(tmp_path, trained, home):
    run = copy_run(trained, tmp_path / "ow")
    bad_data = npz(tmp_path / "nan.npz", x_train=np.full((5, 4), np.nan), x_test=np.zeros((2, 4)))
    broken = tmp_path / "broken.py"
    broken.write_text("import pyro\nraise RuntimeError('half-written model')\n")
    cmp = tmp_path / "cmp"
    (r,) = cli_cases([{"argv": ["compare", "--models", "ae", *SMALL, "--out", cmp]}], home)
    assert r.returncode == 0, r.stderr
    cases = {
        "--epochs must be at least 1": ["train", "vae", *SMALL, "--epochs", "0"],
        "NaN": ["train", "vae", *SMALL, "--data", bad_data],
        "could not import": ["train", broken, *SMALL],
        "--device cuda": ["train", "vae", *SMALL, "--device", "cuda"],
        "--latent-dim must be at least 1": ["train", "vae", *SMALL, "--latent-dim", "0"],
    }
    if torch.cuda.is_available():
        del cases["--device cuda"]
    before = snapshot(tmp_path)
    argvs = [[*a, "--out", run, "--overwrite"] for a in cases.values()]
    argvs.append(
        ["compare", "--models", "ae", *SMALL, "--epochs", "0", "--out", cmp, "--overwrite"]
    )
    results = cli_cases([{"argv": a} for a in argvs], home)
    for expect, r in zip([*cases, "--epochs must be at least 1"], results):
        one_error_line(r, expect)
    assert snapshot(tmp_path) == before


def test_a_second_writer_is_refused(tmp_path, trained, home):
    run = copy_run(trained, tmp_path / "run")
    holder = RunDir(run)
    with holder.lock():
        before = snapshot(tmp_path)
        results = cli_cases(
            [
                {"argv": ["train", "vae", *SMALL, "--out", run, "--overwrite"]},
                {"argv": ["train", "vae", *SMALL, "--epochs", "2", "--out", run, "--resume"]},
                {"argv": ["evaluate", run, "--iwae-samples", "2", "--no-progress"]},
            ],
            home,
        )
        for r in results:
            one_error_line(r, f"is being written by another ppl-vae process (pid {os.getpid()})")
        assert snapshot(tmp_path) == before


def weights_and_history(run: Path):
    state = checkpoint.load(run)
    metrics = json.loads((run / "metrics.json").read_text())
    return state["module"], state["optimizer"], metrics["history"], state["step"]


def test_a_crash_mid_epoch_resumes_exactly_with_the_schedules(tmp_path, home):
    """kill -9 in epoch 2 of a 3-epoch run with a cosine lr and a cyclical beta: the
    checkpoint every 10 steps (step 80, mid-epoch) keeps all but 7 steps, temporaries are
    removed, and the resumed run equals the uninterrupted one bit for bit."""
    opts = [*SMALL, "--epochs", "3", "--lr-schedule", "cosine", "--beta-schedule", "cyclical"]
    opts += ["--checkpoint-every", "10"]
    a, b = tmp_path / "straight", tmp_path / "crashed"
    ra, rb = cli_cases(
        [
            {"argv": ["train", "vae", *opts, "--out", a]},
            {"argv": ["train", "vae", *opts, "--out", b], "exit_at_step": 87},
        ],
        home,
    )
    assert ra.returncode == 0, ra.stderr
    assert rb.returncode == 137
    state = checkpoint.load(b)
    assert (state["step"], state["epoch"], state["position"]) == (80, 1, 80 - STEPS)
    assert not (b / "metrics.json").exists()
    leftover = b / ".checkpoint-90.safetensors.0badc0de.ppl-vae-tmp"
    leftover.write_bytes(b"\0" * 1000)  # an interrupted write
    (r,) = cli_cases([{"argv": ["train", "vae", "--no-progress", "--out", b, "--resume"]}], home)
    assert r.returncode == 0, r.stderr
    assert not leftover.exists()
    wa, oa, ha, sa = weights_and_history(a)
    wb, ob, hb, sb = weights_and_history(b)
    assert ha == hb and sa == sb == 3 * STEPS
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    for k, v in oa["state"].items():
        for name, t in v.items():
            assert torch.equal(t, ob["state"][k][name]), (k, name)
    assert sorted(RunDir(b).manifest()) == sorted(RunDir(a).manifest())


def test_resume_refuses_other_options_and_may_extend(tmp_path, trained, home):
    run = copy_run(trained, tmp_path / "run")
    before = snapshot(tmp_path)
    r1, r2, r3 = cli_cases(
        [
            {
                "argv": [
                    "train",
                    "vae",
                    "--out",
                    run,
                    "--resume",
                    "--latent-dim",
                    "3",
                    "--lr",
                    "0.1",
                ]
            },
            {"argv": ["train", "ae", "--out", run, "--resume", "--beta", "2"]},
            {"argv": ["train", "vae", "--out", run, "--resume", "--epochs", "0"]},
        ],
        home,
    )
    one_error_line(r1, "options differ")
    assert "latent_dim 2 -> 3" in r1.stderr and "lr 0.001 -> 0.1" in r1.stderr
    one_error_line(r2, "model vae -> ae")
    assert "beta 1.0 -> 2.0" in r2.stderr
    one_error_line(r3, "--epochs must be at least 1")
    assert snapshot(tmp_path) == before
    (r,) = cli_cases([{"argv": ["train", "vae", "--out", run, "--resume", "--epochs", "2"]}], home)
    assert r.returncode == 0, r.stderr
    assert len(json.loads((run / "metrics.json").read_text())["history"]) == 2


# -------------------------------------------------------------------- nothing executed
def test_a_config_naming_code_outside_the_run_never_runs_it(tmp_path, trained, home):
    run = copy_run(trained, tmp_path / "run")
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    config = json.loads((run / "config.json").read_text())
    config["model"] = str(evil)
    (run / "config.json").write_text(json.dumps(config))
    before = snapshot(tmp_path)
    results = cli_cases(
        [
            {"argv": ["sample", run, "-n", "4", "--out", tmp_path / "s.png"]},
            {"argv": ["evaluate", run, "--iwae-samples", "2"]},
            {"argv": ["analyze", run, "--points", "2", "--nuts-points", "0"]},
        ],
        home,
    )
    for r in results:
        one_error_line(r, "names model code outside the run")
    assert not marker.exists()
    assert snapshot(tmp_path) == before


def test_a_users_model_is_copied_hashed_trusted_and_portable(tmp_path, home):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    shutil.copy(ROOT / "examples" / "custom_model.py", work / "my_model.py")
    rng = np.random.default_rng(0)
    npz(work / "d.npz", x_train=rng.random((64, 6, 6)), x_test=rng.random((16, 6, 6)))
    (r,) = cli_cases(
        [
            {
                "argv": ["train", "my_model.py", "--data", "d.npz", *SMALL, "--out", "run"],
                "cwd": work,
            }
        ],
        home,
    )
    assert r.returncode == 0, r.stderr
    run = work / "run"
    config = json.loads((run / "config.json").read_text())
    copied = (run / "model.py").read_bytes()
    assert copied == (work / "my_model.py").read_bytes()
    assert config["model_file"] == "model.py"
    assert config["model_sha256"] == __import__("hashlib").sha256(copied).hexdigest()
    assert len(config["data_sha256"]) == 64
    # From another folder, the original model file gone: the run's copy is used.
    (work / "my_model.py").unlink()
    stranger = {"XDG_CONFIG_HOME": str(tmp_path / "stranger")}
    before = snapshot(tmp_path)
    (untrusted,) = cli_cases(
        [{"argv": ["sample", run, "-n", "4", "--out", "s.png"], "cwd": elsewhere}], stranger
    )
    one_error_line(untrusted, "pass --trust")
    assert snapshot(tmp_path) == before
    ok, trusted = cli_cases(
        [
            {"argv": ["sample", run, "-n", "4", "--out", "s.png"], "cwd": elsewhere},
            {"argv": ["sample", run, "-n", "4", "--out", "t.png", "--trust"], "cwd": elsewhere},
        ],
        home,
    )
    assert ok.returncode == 0, ok.stderr
    (trusted,) = cli_cases(
        [{"argv": ["sample", run, "-n", "4", "--out", "t.png", "--trust"], "cwd": elsewhere}],
        stranger,
    )
    assert trusted.returncode == 0, trusted.stderr
    assert (elsewhere / "s.png").is_file() and (elsewhere / "t.png").is_file()
    # Changed model code is refused; changed data is named when evaluating.
    with open(run / "model.py", "ab") as f:
        f.write(b"\n# edited\n")
    (r,) = cli_cases(
        [{"argv": ["sample", run, "-n", "4", "--out", "u.png"], "cwd": elsewhere}], home
    )
    one_error_line(r, "changed since training")
    (run / "model.py").write_bytes(copied)
    npz(work / "d.npz", x_train=rng.random((64, 6, 6)), x_test=rng.random((16, 6, 6)))
    (r,) = cli_cases(
        [{"argv": ["evaluate", run, "--iwae-samples", "2", "--no-progress"], "cwd": elsewhere}],
        home,
    )
    assert r.returncode == 0, r.stderr
    assert "warning: data file" in r.stderr and "changed since the run was trained" in r.stderr


def test_checkpoint_paths_stay_inside_the_run(tmp_path, trained, home):
    victim = copy_run(trained, tmp_path / "victim")
    run = copy_run(trained, tmp_path / "run")
    body = json.loads((run / "checkpoint.json").read_text())
    theirs = json.loads((victim / "checkpoint.json").read_text())
    body["weights"], body["sha256"] = f"../victim/{theirs['weights']}", theirs["sha256"]
    (run / "checkpoint.json").write_text(json.dumps(body))
    listed = copy_run(trained, tmp_path / "listed")
    (listed / "checkpoint.json").write_text("[1, 2, 3]")
    before = snapshot(tmp_path)
    results = cli_cases(
        [
            {"argv": ["train", "vae", "--out", run, "--resume", "--epochs", "2"]},
            {"argv": ["sample", run, "-n", "4", "--out", tmp_path / "s.png"]},
            {"argv": ["train", "vae", "--out", listed, "--resume", "--epochs", "2"]},
            {"argv": ["evaluate", listed, "--iwae-samples", "2"]},
        ],
        home,
    )
    for r in results[:2]:
        one_error_line(r, "leaves the run directory")
    for r in results[2:]:
        one_error_line(r, "is not a ppl-vae checkpoint record")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------- nothing leaked
def test_report_embeds_only_the_runs_own_files_with_one_mode(tmp_path, trained, home):
    run = copy_run(trained, tmp_path / "run")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"\x89PNG\r\n\x1a\n" + b"top secret password" * 10)
    (run / "leak.png").symlink_to(secret)
    (run / "evaluation.json").symlink_to(tmp_path / "private.json")
    (tmp_path / "private.json").write_text('{"password": 12345}')
    (run / "analysis").mkdir()
    shutil.copy(secret, run / "analysis" / "planted.png")  # a regular file, not ours
    before = snapshot(tmp_path)
    (r,) = cli_cases([{"argv": ["report", run]}], home)
    assert r.returncode == 0, r.stderr
    page = (run / "report.html").read_text()
    assert base64.b64encode(secret.read_bytes())[:40].decode() not in page
    assert "leak.png" not in page and "planted.png" not in page and "12345" not in page
    after = snapshot(tmp_path)
    changed = {k for k in after if after[k] != before.get(k)} | (set(before) - set(after))
    assert changed <= {"run/report.html", "run/manifest.json", "run/.lock"}  # .lock: the pid
    # Every file the run wrote has one mode: 0o666 less the umask (0644 here).
    mask = os.umask(0)
    os.umask(mask)
    modes = {stat.S_IMODE((trained / n).stat().st_mode) for n in RunDir(trained).manifest()}
    assert modes == {0o666 & ~mask}


# ------------------------------------------------------------- one clear line each
def bad_inputs(tmp: Path) -> dict[str, tuple[list, str]]:
    """The issue's list: case -> (argv, what the error line names)."""
    empty = npz(tmp / "empty.npz", x_train=np.zeros((0, 4)), x_test=np.zeros((0, 4)))
    good = npz(tmp / "good.npz", x_train=np.full((8, 4), 0.5), x_test=np.full((3, 4), 0.5))
    truncated = tmp / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:150])
    renamed = tmp / "renamed.npz"
    np.save(tmp / "arr.npy", np.zeros((4, 4)))
    (tmp / "arr.npy").rename(renamed)
    text = tmp / "notes.py"
    text.write_text("this is not python at all (\n")
    raising = tmp / "raising.py"
    raising.write_text(
        "class M:\n    def __init__(self, x_dim):\n        raise ValueError('no')\n"
        "    def model(self, x): pass\n    def guide(self, x): pass\nMODEL = M\n"
    )
    existing = tmp / "a_file"
    existing.write_text("mine")
    folder = tmp / "a_folder"
    folder.mkdir()
    out = ["--out", tmp / "out"]
    t = ["train", "vae", *SMALL]
    return {
        "empty npz": (["train", "vae", "--data", empty, *out], "empty.npz"),
        "truncated npz": (["train", "vae", "--data", truncated, *out], "truncated.npz"),
        "npy renamed npz": (["train", "vae", "--data", renamed, *out], "renamed.npz"),
        "hidden abc": ([*t, "--hidden", "abc", *out], "--hidden"),
        "compare hidden abc": (["compare", "--hidden", "abc", *out], "--hidden"),
        "latent -2": ([*t, "--latent-dim", "-2", *out], "--latent-dim"),
        "latent 0": ([*t, "--latent-dim", "0", *out], "--latent-dim"),
        "latent huge": ([*t, "--latent-dim", "1000000000", *out], "--latent-dim"),
        "lr inf": ([*t, "--lr", "inf", *out], "--lr"),
        "beta inf": ([*t, "--beta", "inf", *out], "--beta"),
        "seed -1": ([*t, "--seed", "-1", *out], "--seed"),
        "lr-final -1": ([*t, "--lr-final", "-1", *out], "--lr-final"),
        "hidden 0": ([*t, "--hidden", "0", *out], "--hidden"),
        "warmup -5": ([*t, "--warmup-steps", "-5", *out], "--warmup-steps"),
        "cycles 0": ([*t, "--cycles", "0", *out], "--cycles"),
        "set latent 2.5": ([*t, "--set", "latent_dim=2.5", *out], "latent"),
        "set likelihood 5": ([*t, "--set", "likelihood=5", *out], "likelihood"),
        "set x_dim": ([*t, "--set", "x_dim=5", *out], "x_dim"),
        "latent abc": ([*t, "--latent-dim", "abc", *out], "--latent-dim"),
        "model text file": (["train", text, *SMALL, *out], "not a Python program"),
        "model directory": (["train", folder, *SMALL, *out], "is a directory"),
        "constructor raises": (["train", raising, "--epochs", "1", *out], "ValueError: no"),
        "out is a file": ([*t, "--out", existing], "is a file, not a directory"),
        "out under a file": ([*t, "--out", existing / "run"], "is a file, not a folder"),
        "no such command": (["trian", "vae"], "invalid choice"),
    }


def test_every_bad_input_is_one_clear_line_and_writes_nothing(tmp_path, trained, home):
    cases = bad_inputs(tmp_path)
    run = copy_run(trained, tmp_path / "run")
    cases |= {
        "sample -n huge": (["sample", run, "-n", "100000000", "--out", tmp_path / "s.png"], "-n"),
        "sample out folder": (["sample", run, "--out", tmp_path / "a_folder"], "is a folder"),
        "chunk huge": (["evaluate", run, "--chunk-size", "1000000"], "--chunk-size"),
    }
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases["out unwritable"] = (["train", "vae", *SMALL, "--out", locked / "r"], "not writable")
    before = snapshot(tmp_path)
    results = cli_cases([{"argv": argv} for argv, _ in cases.values()], home)
    for (name, (_, expect)), r in zip(cases.items(), results):
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, (name, r.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, r.stderr)
        assert expect in lines[0], (name, lines[0])
    assert snapshot(tmp_path) == before


def test_models_into_a_closed_pipe_exits_quietly():
    p = subprocess.Popen(
        [sys.executable, "-m", "ppl_vae", "models"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    p.stdout.close()  # the reader is gone before the first line (`| head -0`)
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141
    assert err == ""


# ------------------------------------------------------------------- any option value
TINY: dict[str, Path] = {}


def tiny_data(tmp_path_factory) -> Path:
    if "path" not in TINY:
        rng = np.random.default_rng(0)
        path = tmp_path_factory.mktemp("tiny") / "tiny.npz"
        npz(path, x_train=rng.random((12, 3)), x_test=rng.random((4, 3)))
        TINY["path"] = path
    return TINY["path"]


numbers = st.one_of(
    st.integers(-3, 3).map(str),
    st.sampled_from(["inf", "-inf", "nan", "1e30", "0.5", "1e-3", "abc", "", "2.5", "-0"]),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "--latent-dim": numbers,
            "--hidden": st.one_of(numbers, st.sampled_from(["4,4", "0,3", ",", "8"])),
            "--lr": numbers,
            "--lr-final": numbers,
            "--beta": numbers,
            "--seed": numbers,
            "--warmup-steps": numbers,
            "--cycles": numbers,
            "--batch-size": numbers,
            "--checkpoint-every": numbers,
            "--epochs": st.sampled_from(["0", "1", "-1", "x"]),
            "--set": st.sampled_from(["latent_dim=2.5", "x_dim=1", "likelihood=5", "q", "a=b"]),
        },
    ),
    st.sampled_from(["vae", "ae", "pca"]),
)
def test_any_option_values_train_or_are_refused_without_writing(tmp_path_factory, options, model):
    out = tmp_path_factory.mktemp("h") / "out"
    argv = ["train", model, "--data", str(tiny_data(tmp_path_factory)), "--no-progress"]
    for flag, value in options.items():
        argv += [f"{flag}={value}"]
    if "--epochs" not in options:
        argv += ["--epochs", "1"]
    code = cli.main([*argv, "--out", str(out)])
    assert code in (0, 2), argv
    if code == 2:
        assert not out.exists(), argv
    else:
        assert (out / "metrics.json").is_file()


def test_a_zip_of_garbage_is_one_line(tmp_path, home):
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("x_train.npy", b"garbage")
    before = snapshot(tmp_path)
    (r,) = cli_cases([{"argv": ["train", "vae", "--data", bad, "--out", tmp_path / "o"]}], home)
    one_error_line(r, "bad.npz")
    assert snapshot(tmp_path) == before
