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


@pytest.mark.slow
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


@pytest.mark.slow
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


# ----------------------------------------------------- issue 21: hostile runs and faults
def rewrite_json(path: Path, edit) -> None:
    body = json.loads(path.read_text())
    edit(body)
    path.write_text(json.dumps(body))


def deep(n: int = 100_000) -> str:
    return "[" * n + "]" * n


def reweigh(run: Path, data: bytes) -> None:
    """Replace a run's weights file by ``data`` and update the hash the record holds (a
    hostile edit that passes the hash check)."""
    body = json.loads((run / "checkpoint.json").read_text())
    (run / body["weights"]).write_bytes(data)
    body["sha256"] = __import__("hashlib").sha256(data).hexdigest()
    (run / "checkpoint.json").write_text(json.dumps(body))


def nan_weights(run: Path) -> bytes:
    from safetensors.torch import load, save

    body = json.loads((run / "checkpoint.json").read_text())
    tensors = load((run / body["weights"]).read_bytes())
    key = next(k for k in tensors if k.startswith("module."))
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    return save(tensors)


def record_edit(key, value):
    return lambda b: b["record"].__setitem__(key, value)


def hostile_runs(tmp: Path, trained: Path) -> dict[str, tuple]:
    """case -> (how the copied run is damaged, the command after the run's path, what the
    one error line names)."""
    thesis = tmp / "thesis.tex"
    thesis.write_text("four years of work")
    ev = ["evaluate", "{run}", "--iwae-samples", "2", "--no-progress"]
    header = (2**40 * 4 * 8).to_bytes(8, "little")  # "2^40 floats" in the first 8 bytes
    huge = json.dumps({"w": {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 2**42]}})
    huge_bytes = len(huge).to_bytes(8, "little") + huge.encode()
    return {
        "lock links to a thesis": (
            lambda r: (r / ".lock").symlink_to(thesis),
            ["train", "vae", *SMALL, "--out", "{run}", "--overwrite"],
            ".lock is a symlink",
        ),
        "lock links to a thesis, evaluate": (
            lambda r: (r / ".lock").symlink_to(thesis),
            ev,
            ".lock is a symlink",
        ),
        "lock links to a thesis, report": (
            lambda r: (r / ".lock").symlink_to(thesis),
            ["report", "{run}"],
            ".lock is a symlink",
        ),
        "lock is a FIFO": (lambda r: os.mkfifo(r / ".lock"), ["report", "{run}"], "regular file"),
        "manifest is a FIFO": (
            lambda r: ((r / "manifest.json").unlink(), os.mkfifo(r / "manifest.json")),
            ["report", "{run}"],
            "not a regular file",
        ),
        "manifest is /dev/zero": (
            lambda r: (
                (r / "manifest.json").unlink(),
                (r / "manifest.json").symlink_to("/dev/zero"),
            ),
            ["report", "{run}"],
            "symlink",
        ),
        "manifest deep": (
            lambda r: (r / "manifest.json").write_text(deep()),
            ["report", "{run}"],
            "nests deeper",
        ),
        "config deep": (lambda r: (r / "config.json").write_text(deep()), ev, "nests deeper"),
        "checkpoint deep": (
            lambda r: (r / "checkpoint.json").write_text(deep()),
            ev,
            "nests deeper",
        ),
        "config 65 MiB sparse": (
            lambda r: os.truncate(r / "config.json", 65 * 2**20),
            ev,
            "MiB ppl-vae reads",
        ),
        "weights garbage": (lambda r: reweigh(r, b"garbage" * 100), ev, "not a safetensors"),
        "weights pickle": (
            lambda r: reweigh(r, __import__("pickle").dumps({"a": 1})),
            ev,
            "not a safetensors",
        ),
        "weights header 2^40": (lambda r: reweigh(r, header + b"{}"), ev, "header claims"),
        "weights claim 2^40 elements": (
            lambda r: reweigh(r, huge_bytes),
            ev,
            "outside",
        ),
        "weights NaN": (lambda r: reweigh(r, nan_weights(r)), ev, "NaN"),
        "seed -1": (
            lambda r: rewrite_json(r / "config.json", lambda b: b["train"].update(seed=-1)),
            ev,
            "--seed",
        ),
        "seed 1e400": (
            lambda r: (r / "config.json").write_text(
                (r / "config.json").read_text().replace('"seed": 0', '"seed": 1e400')
            ),
            ev,
            "--seed",
        ),
        "labels abc": (
            lambda r: rewrite_json(r / "config.json", lambda b: b.update(labels="abc")),
            ev,
            "--labels",
        ),
        "step 1e308": (
            lambda r: rewrite_json(r / "checkpoint.json", record_edit("step", 1e308)),
            ev,
            "step",
        ),
        "step abc": (
            lambda r: rewrite_json(r / "checkpoint.json", record_edit("step", "abc")),
            ["train", "vae", "--out", "{run}", "--resume", "--epochs", "2"],
            "step",
        ),
        "history abc": (
            lambda r: rewrite_json(r / "checkpoint.json", record_edit("history", "abc")),
            ["train", "vae", "--out", "{run}", "--resume", "--epochs", "2"],
            "history",
        ),
        "position without running": (
            lambda r: rewrite_json(r / "checkpoint.json", record_edit("position", 7)),
            ["train", "vae", "--out", "{run}", "--resume", "--epochs", "2"],
            "running loss",
        ),
        "download from a received run": (
            lambda r: rewrite_json(
                r / "config.json",
                lambda b: b.update(data="mnist", data_root=str(tmp / "fetched"), download=True),
            ),
            ev,
            "not found",
        ),
        "evaluate with a linked report.html": (
            lambda r: ((r / "report.html").unlink(), (r / "report.html").symlink_to(thesis)),
            ev,
            "report.html was not written by ppl-vae",
        ),
        "resume with a linked figure": (
            lambda r: ((r / "samples.png").unlink(), (r / "samples.png").symlink_to(thesis)),
            ["train", "vae", "--out", "{run}", "--resume", "--epochs", "2"],
            "samples.png was not written by ppl-vae",
        ),
        "device meta on a run": (lambda r: None, [*ev, "--device", "meta"], "--device"),
        "analyze seed -1": (lambda r: None, ["analyze", "{run}", "--seed", "-1"], "--seed"),
        "analyze draws 1e9": (
            lambda r: None,
            ["analyze", "{run}", "--draws", "1000000000"],
            "--draws",
        ),
    }


@pytest.mark.slow
def test_hostile_run_directories_are_one_line_and_change_nothing(tmp_path, trained, home):
    cases = hostile_runs(tmp_path, trained)
    argvs = []
    for i, (name, (damage, argv, _)) in enumerate(cases.items()):
        run = copy_run(trained, tmp_path / f"r{i}")
        if name.startswith("lock"):
            (run / ".lock").unlink()  # replaced by a planted one
        damage(run)
        argvs.append([str(run) if a == "{run}" else a for a in argv])
    before = snapshot(tmp_path)
    results = cli_cases([{"argv": a} for a in argvs], home)
    for (name, (_, _, expect)), r in zip(cases.items(), results):
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, (name, r.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, r.stderr[-2000:])
        assert expect in lines[0], (name, lines[0])
    assert snapshot(tmp_path) == before  # the thesis and every .lock too; no fetched/
    assert (tmp_path / "thesis.tex").read_text() == "four years of work"


def idx_garbage(root: Path) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images", "train-labels", "t10k-images", "t10k-labels"):
        kind = "idx3" if "images" in name else "idx1"
        (raw / f"{name}-{kind}-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\xff" * 12)
    return root


def legacy_root(root: Path) -> Path:
    processed = root / "MNIST" / "processed"
    processed.mkdir(parents=True)
    (processed / "training.pt").write_bytes(__import__("pickle").dumps([1, 2]))
    (processed / "test.pt").write_bytes(__import__("pickle").dumps([1, 2]))
    return root


def dsprites_file(path: Path, n_claimed: int, classes: np.ndarray) -> Path:
    header = {"descr": "|u1", "fortran_order": False, "shape": (n_claimed, 64, 64)}
    buf = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(b"\0" * 4096)
    arrays = {"latents_classes": classes, "latents_values": classes.astype(float)}
    np.savez(path, **arrays)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("imgs.npy", buf.getvalue())
    return path


def hostile_data_and_options(tmp: Path) -> dict[str, tuple[list, str]]:
    out = ["--out", tmp / "out"]
    t = ["train", "vae", *SMALL]
    rng = np.random.default_rng(0)
    x = rng.random((8, 4))
    minus5 = npz(tmp / "m5.npz", x_train=x, x_test=x[:3], y_train=np.full(8, -5))
    fifo = tmp / "fifo.npz"
    os.mkfifo(fifo)
    exits = tmp / "exits.py"
    exits.write_text("import sys\nsys.exit(3)\n")
    classes = np.zeros((1, 6), dtype=np.int64)
    big = dsprites_file(tmp / "big.npz", 2**40, classes)
    negative = dsprites_file(tmp / "neg.npz", 1, np.full((1, 6), -3, dtype=np.int64))
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    (tmp / "cmp").mkdir()
    (tmp / "cmp" / "ae").symlink_to(elsewhere)
    return {
        "labels all -5": ([*t, "--data", minus5, *out], "labels from -5"),
        "npz is a FIFO": ([*t, "--data", fifo, *out], "not a regular file"),
        "legacy pickled .pt": (
            [*t, "--data", "mnist", "--data-root", legacy_root(tmp / "legacy"), *out],
            "never unpickles",
        ),
        "bad IDX headers": (
            [*t, "--data", "mnist", "--data-root", idx_garbage(tmp / "idx"), *out],
            "could not read mnist",
        ),
        "dsprites claims 2^40 images": (
            ["train", "vae", *SMALL, "--data", "dsprites-original", "--data-root", big, *out],
            "not one image per class row",
        ),
        "dsprites negative classes": (
            ["train", "vae", *SMALL, "--data", "dsprites-original", "--data-root", negative, *out],
            "negative classes",
        ),
        "seed 2^63-1": ([*t, "--seed", "9223372036854775807", *out], "--seed"),
        "device meta": ([*t, "--device", "meta", *out], "--device"),
        "out not UTF-8": ([*t, "--out", str(tmp) + "/r\udcff"], "not UTF-8"),
        "out 300 characters": ([*t, "--out", tmp / ("r" * 300)], "300 bytes"),
        "labels over the data": ([*t, "--labels", "100000", *out], "more than the 1437"),
        "model calls sys.exit": (["train", exits, *SMALL, *out], "sys.exit(3)"),
        "compare into a planted link": (
            ["compare", "--models", "ae", *SMALL, "--out", tmp / "cmp", "--overwrite"],
            "is a symlink",
        ),
    }


def test_hostile_data_and_options_are_one_line_and_write_nothing(tmp_path, home):
    cases = hostile_data_and_options(tmp_path)
    before = snapshot(tmp_path)
    results = cli_cases([{"argv": argv} for argv, _ in cases.values()], home)
    for (name, (_, expect)), r in zip(cases.items(), results):
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, (name, r.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, r.stderr[-2000:])
        assert expect in lines[0], (name, lines[0])
    assert snapshot(tmp_path) == before


FAILING = """
import pyro, pyro.distributions as dist, torch
from torch import nn
CALLS = [0]
class Fails:
    def __init__(self, x_dim):
        self.net = nn.Linear(2, x_dim)
    def model(self, x):
        pyro.module("net", self.net)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.net(z), 1.0).to_event(1), obs=x)
    def guide(self, x):
        CALLS[0] += 1
        if CALLS[0] > AFTER:
            raise RuntimeError("the program broke at call %d" % CALLS[0])
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
MODEL = Fails
"""


def test_any_failure_during_training_rolls_back_with_one_line(tmp_path, home):
    work = tmp_path / "work"
    work.mkdir()
    (work / "fails.py").write_text(FAILING.replace("AFTER", "20"))
    before = snapshot(tmp_path)
    opts = ["--epochs", "1", "--no-progress", "--no-jit"]
    (r,) = cli_cases([{"argv": ["train", "fails.py", *opts, "--out", "run"], "cwd": work}], home)
    one_error_line(r, "RuntimeError: the program broke at call")
    assert snapshot(tmp_path) == before  # the run directory is gone again


def test_environment_faults_are_one_line(tmp_path):
    a_file = tmp_path / "xdg"
    a_file.write_text("not a folder")
    shutil.copy(ROOT / "examples" / "custom_model.py", tmp_path / "m.py")
    npz(tmp_path / "d.npz", x_train=np.full((8, 4), 0.5), x_test=np.full((3, 4), 0.5))
    before = snapshot(tmp_path)
    argv = ["train", "m.py", "--data", "d.npz", *SMALL, "--out", "run"]
    (r,) = cli_cases([{"argv": argv, "cwd": tmp_path}], {"XDG_CONFIG_HOME": str(a_file)})
    one_error_line(r, "XDG_CONFIG_HOME")
    assert snapshot(tmp_path) == before
    with open("/dev/full", "w") as full:
        p = subprocess.run(
            [sys.executable, "-m", "ppl_vae", "models"], stdout=full, stderr=subprocess.PIPE
        )
    lines = p.stderr.decode().strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "No space left" in lines[0], lines


def test_a_broken_plugin_is_one_warning_and_the_suite_still_lists(tmp_path):
    dist_info = tmp_path / "site" / "brokenplug-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplug\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[ppl_vae.models]\nbroken = json:NoSuchThing\n")
    path = f"{tmp_path / 'site'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    p = subprocess.run(
        [sys.executable, "-m", "ppl_vae", "models"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert p.returncode == 0, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "brokenplug" in lines[0]
    assert "vae " in p.stdout and "broken" not in p.stdout


# Random edits of a valid run's JSON: exit 0 or 2, one line when refused, nothing changed.
EDIT_VALUES = st.sampled_from(
    [-1, 0, 1e308, 2**64, "abc", "", None, True, [], {}, [[[[1]]]], float("nan"), "../x"]
)


def leaf_paths(obj, prefix=()):
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            yield from leaf_paths(v, (*prefix, k))
    elif isinstance(obj, list) and obj and len(prefix) < 4:
        yield from leaf_paths(obj[0], (*prefix, 0))
    yield prefix


RUN_COPIES: dict[str, Path] = {}


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.sampled_from(["config.json", "checkpoint.json", "manifest.json", "metrics.json"]),
    st.integers(0, 10**6),
    EDIT_VALUES,
    st.sampled_from(["report", "evaluate", "sample"]),
)
def test_random_edits_of_a_runs_json_are_refused_in_one_line(
    tmp_path_factory, trained, name, which, value, command
):
    import contextlib
    import io

    run = copy_run(trained, tmp_path_factory.mktemp("edit") / "run")
    body = json.loads((run / name).read_text())
    paths = [p for p in leaf_paths(body) if p]
    where = paths[which % len(paths)]
    target = body
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    (run / name).write_text(json.dumps(body))
    before = snapshot(run.parent)
    argv = {
        "report": ["report", str(run)],
        "evaluate": ["evaluate", str(run), "--iwae-samples", "2", "--no-progress"],
        "sample": ["sample", str(run), "-n", "4", "--out", str(run.parent / "s.png")],
    }[command]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    assert code in (0, 2), (where, value, err.getvalue())
    if code == 2:
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (where, value, lines)
        assert snapshot(run.parent) == before, (where, value)


# ------------------------------------------- issue 21: the lock, failed resumes, faults
def not_a_run(run: Path) -> None:
    """Empty the folder but for ``.lock`` and leave one file of the user's in it."""
    for p in run.iterdir():
        if p.name != ".lock":
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    (run / "notes.txt").write_text("mine")


def refused_under_the_lock(tmp: Path) -> dict[str, tuple]:
    """case -> (how the copied run is prepared, the command, its environment, what the one
    error line names): commands refused after they took the run's lock, or on a folder that
    is not a run."""
    thesis = tmp / "thesis.tex"
    thesis.write_text("four years of work")
    xdg_file = tmp / "xdg-file"
    xdg_file.write_text("not a folder")
    shutil.copy(ROOT / "examples" / "custom_model.py", tmp / "m.py")

    def link(name):
        return lambda r: ((r / name).unlink(), (r / name).symlink_to(thesis))

    def empty(r):
        not_a_run(r)
        (r / "notes.txt").unlink()

    return {
        "resume finds a linked figure": (
            link("samples.png"),
            ["train", "vae", "--out", "{run}", "--resume", "--epochs", "2"],
            {},
            "samples.png was not written by ppl-vae",
        ),
        "analyze finds a file of the user's": (
            lambda r: ((r / "analysis").mkdir(), (r / "analysis" / "mine.txt").write_text("x")),
            ["analyze", "{run}", "--points", "2", "--nuts-points", "0"],
            {},
            "did not write (analysis/mine.txt)",
        ),
        "evaluate finds a linked report": (
            link("report.html"),
            ["evaluate", "{run}", "--iwae-samples", "2", "--no-progress"],
            {},
            "report.html was not written by ppl-vae",
        ),
        "train cannot keep its trust list": (
            empty,
            ["train", tmp / "m.py", *SMALL, "--out", "{run}"],
            {"XDG_CONFIG_HOME": str(xdg_file)},
            "XDG_CONFIG_HOME",
        ),
        **{
            f"{argv[0]} of a folder that is not a run": (
                not_a_run,
                argv,
                {},
                "is not a run directory",
            )
            for argv in [
                ["report", "{run}"],
                ["evaluate", "{run}", "--iwae-samples", "2"],
                ["analyze", "{run}", "--points", "2"],
                ["sample", "{run}", "-n", "4", "--out", tmp / "s.png"],
            ]
        },
    }


@pytest.mark.slow
@pytest.mark.parametrize("lock", [None, b"1\n"], ids=["no lock", "a pid"])
def test_a_refused_command_leaves_the_lock_as_it_was(tmp_path, trained, home, lock):
    """No ``.lock`` created, an existing one's bytes unchanged (init's pid: never the
    command's own), whether the command was refused before or after taking the lock."""
    cases = refused_under_the_lock(tmp_path)
    argvs = []
    for i, (prepare, argv, env, _) in enumerate(cases.values()):
        run = copy_run(trained, tmp_path / f"r{i}")
        prepare(run)
        (run / ".lock").unlink(missing_ok=True)
        if lock is not None:
            (run / ".lock").write_bytes(lock)
        argvs.append({"argv": [run if a == "{run}" else a for a in argv], "env": env})
    before = snapshot(tmp_path)
    results = cli_cases(argvs, home)
    for name, r in zip(cases, results):
        assert r.returncode == 2, (name, r.stderr[-2000:])
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, r.stderr[-2000:])
        assert cases[name][3] in lines[0], (name, lines[0])
    assert snapshot(tmp_path) == before  # .lock included, byte for byte


def raise_at_step(step: int) -> str:
    """``setup`` of a CLI case: training raises at optimizer step ``step``, as a program
    that breaks there would."""
    return (
        "import ppl_vae.infer.trainer as t\n"
        "real = t.training_loss\n"
        "def loss(fn, args, beta, step):\n"
        f"    if step == {step}:\n"
        f"        raise RuntimeError('the program broke at step {step}')\n"
        "    return real(fn, args, beta, step)\n"
        "t.training_loss = loss\n"
    )


def disk_full(name: str, nth: int = 1, persistent: bool = False) -> str:
    """``setup`` of a CLI case: the ``nth`` write of ``name`` fails with ENOSPC at the
    one low-level write (:func:`ppl_vae.runs.atomic.write_tmp`), and with ``persistent``
    every write after it too."""
    return (
        "import errno, os, ppl_vae.runs.atomic as a\n"
        "real, seen = a.write_tmp, [0, False]\n"
        "def write_tmp(folder, name, data):\n"
        f"    seen[0] += name == {name!r}\n"
        f"    if seen[1] or seen[0] == {nth} and name == {name!r}:\n"
        f"        seen[1] = {persistent}\n"
        "        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
        "    return real(folder, name, data)\n"
        "a.write_tmp = write_tmp\n"
    )


RESUME_3 = ["--resume", "--epochs", "3", "--checkpoint-every", "10", "--no-progress"]


@pytest.mark.slow
def test_a_failed_resume_puts_the_run_back_byte_for_byte(tmp_path, trained, home):
    """A resume from epoch 1 to 3 that fails -- the program raises in epoch 3 (after
    mid-epoch and epoch-end checkpoints and a history line), the disk fills at a
    checkpoint or at metrics.json -- leaves the file system as it was before the command;
    the same resume then continues exactly like one that never failed."""
    faults = {
        "the program raises in epoch 3": (raise_at_step(2 * STEPS + 5), "the program broke"),
        "the disk fills at a checkpoint": (disk_full("checkpoint.json", 3), "No space left"),
        "the disk fills at metrics.json": (disk_full("metrics.json"), "No space left"),
    }
    reference = copy_run(trained, tmp_path / "reference")
    runs = [copy_run(trained, tmp_path / f"f{i}") for i in range(len(faults))]
    before = snapshot(tmp_path)
    cases = [
        {"argv": ["train", "vae", "--out", run, *RESUME_3], "setup": setup}
        for run, (setup, _) in zip(runs, faults.values())
    ]
    for (name, (_, expect)), r in zip(faults.items(), cli_cases(cases, home)):
        one_error_line(r, expect)
        assert "as it was before this command" in r.stderr, (name, r.stderr)
    assert snapshot(tmp_path) == before
    results = cli_cases(
        [{"argv": ["train", "vae", "--out", r, *RESUME_3]} for r in [reference, *runs]], home
    )
    for r in results:
        assert r.returncode == 0, r.stderr
    wa, oa, ha, sa = weights_and_history(reference)
    assert sa == 3 * STEPS
    for run in runs:
        wb, ob, hb, sb = weights_and_history(run)
        assert ha == hb and sa == sb
        for k in wa:
            assert torch.equal(wa[k], wb[k]), (run, k)
        for k, v in oa["state"].items():
            for name, t in v.items():
                assert torch.equal(t, ob["state"][k][name]), (run, k, name)
        assert sorted(RunDir(run).manifest()) == sorted(RunDir(reference).manifest())


def test_a_full_disk_during_train_is_one_line_and_rolls_back(tmp_path, trained, home):
    """ENOSPC at the first checkpoint of a fresh run, once or from then on: one line,
    exit 2, nothing left (no byte needs writing to remove a fresh run). From then on during
    a resume: the run cannot be put back, and says so, but its checkpoint stays whole."""
    resumed = copy_run(trained, tmp_path / "resumed")
    before = snapshot(tmp_path)
    fresh = ["train", "vae", *SMALL]
    cases = [
        {"argv": [*fresh, "--out", tmp_path / "once"], "setup": disk_full("checkpoint.json")},
        {
            "argv": [*fresh, "--out", tmp_path / "full"],
            "setup": disk_full("checkpoint.json", persistent=True),
        },
    ]
    for r in cli_cases(cases, home):
        one_error_line(r, "No space left on device")
        assert "nothing of this run was kept" in r.stderr
    assert snapshot(tmp_path) == before
    (r,) = cli_cases(
        [
            {
                "argv": ["train", "vae", "--out", resumed, *RESUME_3],
                "setup": disk_full("checkpoint.json", 3, persistent=True),
            }
        ],
        home,
    )
    one_error_line(r, "No space left on device")
    assert "putting the run back failed too" in r.stderr
    assert checkpoint.load(resumed)["step"] == 60  # the one before the write that failed (70)


@pytest.fixture(scope="module")
def user_run(tmp_path_factory, home) -> Path:
    """A small finished run of a user's model file (``my_model.py``, trusted here as it
    was trained here) on a small data file, both beside it in ``work/``."""
    work = tmp_path_factory.mktemp("user") / "work"
    work.mkdir()
    shutil.copy(ROOT / "examples" / "custom_model.py", work / "my_model.py")
    rng = np.random.default_rng(0)
    npz(work / "d.npz", x_train=rng.random((64, 6, 6)), x_test=rng.random((16, 6, 6)))
    argv = ["train", "my_model.py", "--data", "d.npz", *SMALL, "--out", "run"]
    (r,) = cli_cases([{"argv": argv, "cwd": work}], home)
    assert r.returncode == 0, r.stderr
    return work


def plant_model(run: Path, source: str, rehash: bool) -> None:
    """Replace the run's model.py; with ``rehash`` also the hash config.json records (a
    received run whose sender edited both)."""
    (run / "model.py").write_text(source)
    if rehash:
        sha = __import__("hashlib").sha256(source.encode()).hexdigest()
        rewrite_json(run / "config.json", lambda b: b.update(model_sha256=sha))


def test_model_code_runs_only_from_the_runs_checked_copy(
    tmp_path, tmp_path_factory, user_run, home
):
    """A run's model.py that calls sys.exit(3) at import is one line under --trust; an
    edited or untrusted model.py -- named as the model of a --resume too -- is refused
    before anything imports it; the file a --resume names is never imported: the run's
    own copy runs."""
    marker = tmp_path / "ran"
    stranger = {"XDG_CONFIG_HOME": str(tmp_path_factory.mktemp("stranger"))}  # trusts none
    original = (user_run / "my_model.py").read_text()
    side_effect = f"open({str(marker)!r}, 'w').write('ran')\n"
    work = {}
    for name in ("exits", "edited", "received", "renamed"):
        work[name] = tmp_path / name
        shutil.copytree(user_run, work[name], symlinks=True)
    exits = "import sys\nsys.exit(3)\n"
    plant_model(work["exits"] / "run", exits, rehash=True)
    plant_model(work["edited"] / "run", original + side_effect, rehash=False)
    plant_model(work["received"] / "run", original + side_effect, rehash=True)
    (work["renamed"] / "my_model.py").write_text(original + side_effect)  # edited since
    resume = ["--out", "run", "--resume", "--no-progress"]
    ev = ["evaluate", "run", "--iwae-samples", "2", "--no-progress", "--trust"]
    cases = {
        "evaluate, exits": ({"argv": ev, "cwd": work["exits"]}, "sys.exit(3)"),
        "sample, exits": (
            {"argv": ["sample", "run", "-n", "4", "--out", "s.png", "--trust"]},
            "sys.exit(3)",
        ),
        "resume, exits": ({"argv": ["train", "my_model.py", *resume, "--trust"]}, "sys.exit(3)"),
        "resume from the edited copy": (
            {"argv": ["train", "run/model.py", *resume]},
            "model my_model.py -> run/model.py",
        ),
        "resume from the edited copy, trusted": (
            {"argv": ["train", "run/model.py", *resume, "--trust"]},
            "model my_model.py -> run/model.py",
        ),
        "resume of the edited copy": ({"argv": ["train", "my_model.py", *resume]}, "changed since"),
        "resume from a received copy": (
            {"argv": ["train", "run/model.py", *resume], "env": stranger},
            "pass --trust",
        ),
        "evaluate a received copy": (
            {"argv": ev[:-1], "env": stranger},
            "pass --trust",
        ),
    }
    where = ["exits", "exits", "exits", "edited", "edited", "edited", "received", "received"]
    for (case, _), folder in zip(cases.values(), where):
        case["cwd"] = work[folder]
    before = snapshot(tmp_path)
    results = cli_cases([case for case, _ in cases.values()], home)
    for (name, (_, expect)), r in zip(cases.items(), results):
        assert r.returncode == 2, (name, r.stderr[-2000:])
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, r.stderr[-2000:])
        assert expect in lines[0], (name, lines[0])
    assert not marker.exists()
    assert snapshot(tmp_path) == before
    (r,) = cli_cases([{"argv": ["train", "my_model.py", *resume], "cwd": work["renamed"]}], home)
    assert r.returncode == 0, r.stderr
    assert not marker.exists()  # the run's own copy ran, not the edited file named
