"""The run directory's one commit primitive, counted; a checkpoint read once per resume;
backups made with ``cp -al`` left intact; a refused training leaves no trusted list."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from helpers import cli_cases, snapshot

from ppl_vae.infer.config import TrainConfig
from ppl_vae.runs import checkpoint, fingerprint, manifest, safeio
from ppl_vae.runs.config import RunConfig
from ppl_vae.runs.rundir import RunDir


def count_calls(monkeypatch) -> Counter:
    """Calls of the hash of bytes, the hash of a file read back, and the manifest writer."""
    calls: Counter = Counter()
    for module, name in [
        (fingerprint, "digest"),
        (fingerprint, "sha256_file"),
        (manifest, "write"),
    ]:
        real = getattr(module, name)

        def wrapped(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)
    return calls


def figures(run: RunDir) -> None:
    with run.staged() as path_for:
        for name in ["a.png", "figs/b.png", "figs/c.png"]:
            path_for(name).write_bytes(name.encode())


def figure(run: RunDir) -> None:
    with run.atomic_path("w.bin") as tmp:
        tmp.write_bytes(b"\x01" * 10)


def model_file(run: RunDir) -> None:
    src = run.path.parent / "m.py"
    src.write_text("MODEL = None\n")
    run.copy_model_file(src)


#: case -> (the writes, the hashes of bytes, of files read back, manifest writes).
WRITES = {
    "write_json": (lambda run: run.write_json("config.json", {"a": 1}), 1, 0, 1),
    "staged figures": (figures, 3, 0, 1),
    "atomic_path": (figure, 1, 0, 1),
    "model file": (model_file, 1, 0, 1),
    "checkpoint save": (lambda run: checkpoint.save(run, {"step": 2, "w": torch.ones(3)}), 2, 0, 1),
}


@pytest.mark.parametrize("case", WRITES)
def test_a_commit_hashes_each_file_once_and_writes_the_manifest_once(tmp_path, monkeypatch, case):
    write, digests, file_hashes, manifest_writes = WRITES[case]
    run = RunDir(tmp_path / "run")
    with run.lock():
        checkpoint.save(run, {"step": 1, "w": torch.zeros(3)})  # an old checkpoint to replace
        calls = count_calls(monkeypatch)
        write(run)
    expected = {"digest": digests, "sha256_file": file_hashes, "write": manifest_writes}
    assert dict(calls) == {k: v for k, v in expected.items() if v}
    listed = RunDir(run.path).manifest()
    for name, entry in listed.items():  # every entry is the file's true size and hash
        data = (run.path / name).read_bytes()
        assert entry == {"size": len(data), "sha256": fingerprint.digest(data)}, name
    assert sorted(p.name for p in run.path.glob("checkpoint-*")) == [
        "checkpoint-2.safetensors" if case == "checkpoint save" else "checkpoint-1.safetensors"
    ]


def small(epochs: int) -> RunConfig:
    return RunConfig(
        model="vae",
        model_args={"latent_dim": 2, "hidden": [16]},
        train=TrainConfig(epochs=epochs, progress=False, jit=False),
    )


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> Path:
    """A run of one epoch on digits, copied by each test that resumes it."""
    from ppl_vae.runs.train import train_run

    out = tmp_path_factory.mktemp("commit") / "run"
    train_run(small(1), out)
    return out


def test_a_resume_reads_and_hashes_the_weights_once(tmp_path, one_epoch, monkeypatch):
    from ppl_vae.runs.train import train_run

    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(one_epoch), str(run)], check=True)
    reads, read_back = [], []  # the weights files read; the hashes of those bytes
    real_read, real_digest = safeio.read_regular, fingerprint.digest

    def read_regular(path, limit, what="file"):
        data = real_read(path, limit, what)
        if what == "weights":
            reads.append((Path(path).name, data))
        return data

    def digest(data):
        read_back.extend(name for name, got in reads if got is data)
        return real_digest(data)

    monkeypatch.setattr(safeio, "read_regular", read_regular)
    monkeypatch.setattr(fingerprint, "digest", digest)
    job = train_run(small(2), run, resume=True)
    assert len(job.metrics["history"]) == 2
    assert [name for name, _ in reads] == ["checkpoint-45.safetensors"]  # epoch 1, step 45
    assert read_back == ["checkpoint-45.safetensors"]


def test_a_resume_of_a_run_backed_up_with_cp_al_leaves_the_backup_intact(tmp_path, one_epoch):
    """``cp -al run backup`` shares every inode; the resume replaces ``.lock`` (and every
    file it rewrites) by rename, so each of the backup's files keeps its bytes."""
    from ppl_vae.runs.train import train_run

    run, backup = tmp_path / "run", tmp_path / "backup"
    subprocess.run(["cp", "-a", str(one_epoch), str(run)], check=True)
    subprocess.run(["cp", "-al", str(run), str(backup)], check=True)
    assert os.lstat(run / ".lock").st_nlink == 2
    before = snapshot(backup)
    job = train_run(small(2), run, resume=True)
    assert len(job.metrics["history"]) == 2
    assert snapshot(backup) == before
    assert len(checkpoint.load(backup)["history"]) == 1  # the backup is still epoch 1's run
    assert (run / ".lock").read_text() == f"{os.getpid()}\n"
    on_disk = json.loads((run / "manifest.json").read_text())["files"]
    assert on_disk == RunDir(run).manifest()  # a finished job lists no file it removed


@pytest.mark.parametrize("fails", [False, True], ids=["succeeds", "fails"])
def test_a_hard_linked_lock_is_replaced_by_rename(tmp_path, fails):
    thesis = tmp_path / "thesis.tex"
    thesis.write_text("four years of work")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    os.link(thesis, run.path / ".lock")
    with pytest.raises(KeyError) if fails else contextlib.nullcontext():
        with run.lock():
            run.write_text("config.json", "{}")
            if fails:
                raise KeyError("refused")
    assert thesis.read_text() == "four years of work" and os.lstat(thesis).st_nlink == 1
    lock = (run.path / ".lock").read_text()
    assert lock == ("four years of work" if fails else f"{os.getpid()}\n")


def test_a_refused_training_of_a_model_file_creates_no_trusted_list(tmp_path):
    from test_safety import FAILING

    work = tmp_path / "work"
    work.mkdir()
    (work / "fails.py").write_text(FAILING.replace("AFTER", "20"))
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    before = snapshot(tmp_path)
    opts = ["--epochs", "1", "--no-progress", "--no-jit"]
    (r,) = cli_cases([{"argv": ["train", "fails.py", *opts, "--out", "run"], "cwd": work}], env)
    assert r.returncode == 2 and "the program broke" in r.stderr, r.stderr
    assert snapshot(tmp_path) == before  # no xdg/ppl-vae/trusted.json, no .trusted.lock
    (work / "fine.py").write_text(FAILING.replace("AFTER", "10**9"))
    (r,) = cli_cases([{"argv": ["train", "fine.py", *opts, "--out", "run"], "cwd": work}], env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "xdg" / "ppl-vae" / "trusted.json").is_file()  # trained with: trusted


WRITER = """
import os, sys, time
from ppl_vae.errors import UserError
from ppl_vae.runs.rundir import RunDir
run, done = RunDir(sys.argv[1]), 0
while done < int(sys.argv[2]):
    try:
        with run.lock():
            os.close(os.open(run.path / "inside", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            p = run.path / "count.txt"
            run.write_text("count.txt", str(int(p.read_text()) + 1 if p.exists() else 1))
            os.unlink(run.path / "inside")
            done += 1
    except UserError:
        time.sleep(0.001)
"""


def test_writers_racing_for_a_lock_replaced_by_rename_never_hold_it_together(tmp_path):
    """Each ``lock()`` swaps ``.lock`` for a new file; three processes taking it in a loop
    never hold it at once (the second would fail to create ``inside``) and lose no update."""
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("1\n")  # an existing lock: every take replaces it
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(run), "30"], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()[-2000:]
    assert (run / "count.txt").read_text() == "90"
    assert sorted(p.name for p in run.iterdir()) == [".lock", "count.txt", "manifest.json"]
