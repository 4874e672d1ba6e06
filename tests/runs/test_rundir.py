"""The run directory: every refusal leaves the file system exactly as it was (snapshots
before and after), overwrite removes only what the manifest lists, one writer at a time,
uniform modes, confined paths, trust for user model code, data fingerprints."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppl_vae.errors import UserError
from ppl_vae.runs import atomic, fingerprint, manifest, rundir, trust
from ppl_vae.runs.manifest import MANIFEST
from ppl_vae.runs.rundir import RunDir


def refused(
    run: RunDir, match: str, root: Path, resume=False, overwrite=False, prepare_match=None
) -> None:
    """``check`` refuses and changes nothing under ``root``; so does ``prepare`` under the
    lock, except that ``lock()`` may have created the run folder and its ``.lock``."""
    before = snapshot(root)
    with pytest.raises(UserError, match=match):
        run.check(resume, overwrite)
    assert snapshot(root) == before
    with pytest.raises(UserError, match=prepare_match or match):
        with run.lock():
            run.prepare(resume, overwrite)
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in before} == before
    assert all(k.endswith(".lock") or v[1] is None for k, v in after.items() if k not in before)


def written_run(path: Path) -> RunDir:
    run = RunDir(path)
    with run.lock():
        run.prepare(False, False)
        run.write_json("config.json", {"model": "vae"})
        run.write_bytes("checkpoint-3.safetensors", b"\x00" * 100)
        run.write_text("figures/curves.svg", "<svg/>")
    return run


@pytest.fixture(autouse=True)
def config_home(tmp_path, monkeypatch):
    """Trust lists go to a temporary XDG_CONFIG_HOME; files get the usual umask."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    old = os.umask(0o022)
    yield
    os.umask(old)


# ---------------------------------------------------------------------------- check


def test_fresh_directory_is_created_empty(tmp_path):
    run = RunDir(tmp_path / "a" / "b" / "run")
    run.check(False, False)
    assert list(snapshot(tmp_path)) == ["."]  # check wrote nothing
    with run.lock():
        run.prepare(False, False)
    assert sorted(snapshot(run.path)) == [".", ".lock"]


def test_out_naming_an_existing_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("mine")
    refused(RunDir(tmp_path / "out"), "is a file, not a directory", tmp_path)
    assert (tmp_path / "out").read_text() == "mine"


def test_out_under_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="is a file, not a folder"):
        RunDir(tmp_path / "f" / "run").check(False, False)
    assert snapshot(tmp_path) == before


def test_unwritable_parent_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir.os, "access", lambda *a, **k: False)
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="not writable"):
        RunDir(tmp_path / "new" / "run").check(False, False)
    (tmp_path / "existing").mkdir()
    with pytest.raises(UserError, match="is not writable"):
        RunDir(tmp_path / "existing").check(False, False)
    assert snapshot(tmp_path) == {**before, "existing": snapshot(tmp_path)["existing"]}


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_really_unwritable_folder_is_refused(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o555)
    with pytest.raises(UserError, match="not writable"):
        RunDir(locked / "run").check(False, False)


def test_resume_and_overwrite_together_are_refused(tmp_path):
    refused(RunDir(tmp_path / "r"), "exclude each other", tmp_path, resume=True, overwrite=True)


def test_non_empty_directory_without_a_flag_is_refused(tmp_path):
    run = written_run(tmp_path / "run")
    refused(run, "--resume to continue", tmp_path)


def test_resume_needs_an_existing_run_with_a_manifest(tmp_path):
    refused(  # prepare (under the lock) finds the folder lock() created: still refused
        RunDir(tmp_path / "missing"), "does not exist", tmp_path, True, prepare_match="manifest"
    )
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text("{}")
    refused(RunDir(tmp_path / "old"), "no manifest.json", tmp_path, resume=True)
    run = written_run(tmp_path / "run")
    (run.path / "notes.txt").write_text("user notes survive a resume")
    before = snapshot(run.path)
    with run.lock():
        run.prepare(resume=True, overwrite=False)
    assert snapshot(run.path) == before


def test_overwrite_refuses_the_issue_10_directory(tmp_path):
    """config.json + a thesis + a source folder: nothing is removed."""
    p = tmp_path / "p"
    (p / "src").mkdir(parents=True)
    (p / "src" / "main.c").write_text("int main;")
    (p / "config.json").write_text("{}")
    (p / "thesis.tex").write_text("x")
    refused(RunDir(p), r"did not write \(config.json, src/main.c, thesis.tex\)", tmp_path,
            overwrite=True)  # fmt: skip


def test_overwrite_removes_exactly_the_manifest_files_and_created_folders(tmp_path):
    run = written_run(tmp_path / "run")
    assert sorted(run.manifest()) == ["checkpoint-3.safetensors", "config.json",
                                      "figures/curves.svg"]  # fmt: skip
    with run.lock():
        run.prepare(resume=False, overwrite=True)
    assert sorted(snapshot(run.path)) == [".", ".lock", MANIFEST]
    assert run.manifest() == {}


def test_overwrite_refuses_a_run_holding_a_user_file(tmp_path):
    run = written_run(tmp_path / "run")
    (run.path / "figures" / "my_edit.png").write_bytes(b"precious")
    refused(run, r"did not write \(figures/my_edit.png\)", tmp_path, overwrite=True)


def test_overwrite_refuses_a_listed_name_that_is_now_a_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    run = written_run(tmp_path / "run")
    (run.path / "config.json").unlink()
    (run.path / "config.json").symlink_to(victim)
    refused(run, "did not write", tmp_path, overwrite=True)
    assert victim.read_text() == "keep"


def test_overwrite_removes_leftover_temporaries(tmp_path):
    run = written_run(tmp_path / "run")
    (run.path / ".checkpoint-4.safetensors.0123abcd.ppl-vae-tmp").write_bytes(b"partial")
    with run.lock():
        run.prepare(resume=False, overwrite=True)
    assert sorted(snapshot(run.path)) == [".", ".lock", MANIFEST]


@pytest.mark.parametrize(
    "body",
    ["[1, 2]", "not json", '{"files": [], "dirs": []}', '{"files": {"../x": {}}, "dirs": []}'],
)
def test_a_damaged_manifest_is_refused_before_anything_is_removed(tmp_path, body):
    run = written_run(tmp_path / "run")
    (run.path / MANIFEST).write_text(body)
    refused(run, "is damaged", tmp_path, overwrite=True)


# ----------------------------------------------------------------------------- lock


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    first, second = RunDir(tmp_path / "run"), RunDir(tmp_path / "run")
    with first.lock():
        with pytest.raises(UserError, match=rf"another ppl-vae process \(pid {os.getpid()}\)"):
            with second.lock():
                pass
        with first.lock():  # re-entrant for the holder
            first.write_text("a.txt", "a")
    with second.lock():  # released on exit
        second.write_text("b.txt", "b")


def test_the_lock_of_another_process_is_seen_and_dies_with_it(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"fd = os.open({str(run.path / '.lock')!r}, os.O_RDWR | os.O_CREAT, 0o666)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, f'{os.getpid()}\\n'.encode())\n"
         "print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"pid {child.pid}"):
            with run.lock():
                pass
    finally:
        child.kill()
        child.wait()
    with run.lock():  # a killed writer leaves no stale lock
        pass


def test_writes_need_the_lock(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(RuntimeError, match="outside"):
        run.write_json("config.json", {})
    assert not (tmp_path / "config.json").exists()


# ---------------------------------------------------------------------------- writes


def test_every_write_kind_is_recorded_with_size_hash_and_one_mode(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.lock():
        run.write_json("config.json", {"a": 1})
        run.write_bytes("w.bin", b"\x01\x02")
        run.write_text("sub/dir/n.txt", "hé")
        with run.atomic_path("model.safetensors") as tmp:
            tmp.write_bytes(b"weights")
        fig = run.path / "fig.png"
        fd = os.open(fig, os.O_CREAT | os.O_WRONLY, 0o600)  # written the 0600 way
        os.write(fd, b"png")
        os.close(fd)
        run.record(fig)
    manifest = run.manifest()
    files = ["config.json", "w.bin", "sub/dir/n.txt", "model.safetensors", "fig.png"]
    assert sorted(manifest) == sorted(files)
    for name in files:
        data = (run.path / name).read_bytes()
        assert manifest[name] == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        assert stat.S_IMODE(os.stat(run.path / name).st_mode) == 0o644, name
    assert stat.S_IMODE(os.stat(run.path / MANIFEST).st_mode) == 0o644
    assert json.loads((run.path / "config.json").read_text()) == {"a": 1}
    assert sorted(json.loads((run.path / MANIFEST).read_text())["dirs"]) == ["sub", "sub/dir"]


def test_modes_follow_the_umask(tmp_path):
    os.umask(0o077)
    run = RunDir(tmp_path / "run")
    with run.lock():
        run.write_text("a.txt", "a")
    assert stat.S_IMODE(os.stat(run.path / "a.txt").st_mode) == 0o600
    assert atomic.current_umask() == 0o077


def test_write_json_refuses_nan_and_leaves_no_trace(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.lock():
        before = snapshot(run.path)
        with pytest.raises(ValueError):
            run.write_json("metrics.json", {"elbo": float("nan")})
    assert snapshot(run.path) == before


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    with run.lock():
        run.write_text("config.json", "old")
        before = snapshot(run.path)

        def crash(*args):
            raise OSError("disk full")

        monkeypatch.setattr(rundir.os, "replace", crash)
        with pytest.raises(OSError, match="disk full"):
            run.write_text("config.json", "new")
        monkeypatch.undo()
        with pytest.raises(KeyError):
            with run.atomic_path("w.safetensors") as tmp:
                tmp.write_bytes(b"half")
                raise KeyError("interrupted")
    after = snapshot(run.path)
    assert after["config.json"] == before["config.json"]
    assert not [k for k in after if k.endswith(".ppl-vae-tmp")]
    assert "w.safetensors" not in after


def test_writes_never_replace_user_files_symlinks_or_reserved_names(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    (run.path / "report.html").write_text("the user's page")
    (tmp_path / "victim").write_text("keep")
    (run.path / "leak.png").symlink_to(tmp_path / "victim")
    (run.path / "inner").symlink_to(run.path)
    before = snapshot(tmp_path)
    with run.lock():
        for name, match in [
            ("report.html", "not written by ppl-vae"),
            ("leak.png", "leaves the run directory|symlink"),
            ("inner/x.txt", "symlink"),
            (MANIFEST, "reserves"),
            (".lock", "reserves"),
            ("../x.txt", "leaves the run directory"),
            ("/etc/x", "leaves the run directory"),
        ]:
            with pytest.raises(UserError, match=match):
                run.write_text(name, "x")
    assert snapshot(tmp_path) == {**before, "run/.lock": snapshot(tmp_path)["run/.lock"]}


def test_record_all_lists_several_files_with_one_manifest_write(tmp_path, monkeypatch):
    one, many = RunDir(tmp_path / "one"), RunDir(tmp_path / "many")
    names = ["a.png", "figs/b.png", "figs/deep/c.png"]
    for run in (one, many):
        for i, name in enumerate(names):
            (run.path / name).parent.mkdir(parents=True, exist_ok=True)
            (run.path / name).write_bytes(bytes([i]) * (i + 1))
    with one.lock():
        for name in names:
            one.record(name)
    writes = []
    write = manifest.write
    monkeypatch.setattr(manifest, "write", lambda folder, body: writes.append(write(folder, body)))
    with many.lock():
        assert many.record_all(names) == [many.resolve(n) for n in names]
    assert len(writes) == 1
    assert many.manifest() == one.manifest()
    dirs = [json.loads((r.path / MANIFEST).read_text())["dirs"] for r in (one, many)]
    assert dirs[0] == dirs[1] == ["figs", "figs/deep"]  # the folders they sit in, as record
    (many.path / "d.png").write_bytes(b"d")
    (many.path / "folder.png").mkdir()
    with many.lock(), pytest.raises(UserError, match="not a regular file"):
        many.record_all(["d.png", "folder.png"])
    assert "d.png" not in many.manifest()  # checked first: nothing recorded


def test_record_refuses_files_outside_the_run(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    run = RunDir(tmp_path / "run")
    with run.lock(), pytest.raises(UserError, match="leaves the run directory"):
        run.record(outside)


def test_remove_drops_only_our_files(tmp_path):
    run = written_run(tmp_path / "run")
    (run.path / "mine.txt").write_text("x")
    with run.lock():
        run.remove("checkpoint-3.safetensors")
        with pytest.raises(UserError, match="not a file ppl-vae wrote"):
            run.remove("mine.txt")
    assert not (run.path / "checkpoint-3.safetensors").exists()
    assert "checkpoint-3.safetensors" not in run.manifest()
    assert (run.path / "mine.txt").read_text() == "x"


def test_cleanup_tmp_removes_only_our_temporaries(tmp_path):
    run = written_run(tmp_path / "run")
    ours = [".config.json.deadbeef.ppl-vae-tmp", "figures/.a.png.00000000.ppl-vae-tmp"]
    theirs = [".config.json.deadbeef.tmp", "x.ppl-vae-tmp", ".a.XYZ12345.ppl-vae-tmp", "n.tmp"]
    for name in ours + theirs:
        (run.path / name).write_bytes(b"27 MB, say")
    with run.lock():
        assert run.cleanup_tmp() == sorted(ours)
    left = snapshot(run.path)
    assert all(n not in left for n in ours) and all(n in left for n in theirs)


# ---------------------------------------------------------------------------- reads


def test_resolve_confines_names_to_the_run(tmp_path):
    run = written_run(tmp_path / "run")
    (tmp_path / "victim").mkdir()
    (run.path / "out").symlink_to(tmp_path / "victim")
    (run.path / "alias.json").symlink_to(run.path / "config.json")
    assert run.resolve("config.json") == (run.path / "config.json").resolve()
    assert run.resolve("alias.json") == (run.path / "config.json").resolve()
    for bad in ["../victim/checkpoint-44.safetensors", "/etc/passwd", "a/../../x", "out/x", "",
                "a\x00b"]:  # fmt: skip
        with pytest.raises(UserError):
            run.resolve(bad)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(["a", ".", "/", "..", "\x00", "b/", "~", "out"]), max_size=8))
def test_resolve_returns_a_path_inside_or_a_user_error(tmp_path, parts):
    name = "".join(parts)
    run = RunDir(tmp_path / "run")
    if not run.path.exists():
        run.path.mkdir()
        (run.path / "out").symlink_to(tmp_path)
    try:
        path = run.resolve(name)
    except UserError:
        return
    root = run.path.resolve()
    assert path == root or root in path.parents


def test_is_own_regular_file_is_what_a_report_may_embed(tmp_path):
    run = written_run(tmp_path / "run")
    (run.path / "leak.png").symlink_to("/etc/passwd")
    (run.path / "figures" / "in.svg").symlink_to(run.path / "config.json")
    (run.path / "user.png").write_bytes(b"x")
    body = json.loads((run.path / MANIFEST).read_text())  # a manifest that lies
    body["files"].update({"leak.png": {}, "figures/in.svg": {}, "figures": {}})
    (run.path / MANIFEST).write_text(json.dumps(body))
    assert run.is_own_regular_file("config.json")
    assert run.is_own_regular_file("figures/curves.svg")
    for name in ["leak.png", "figures/in.svg", "figures", "user.png", "missing.png",
                 "../run/config.json", "/etc/passwd"]:  # fmt: skip
        assert not run.is_own_regular_file(name), name


# ---------------------------------------------------------------------------- trust

MODEL_SRC = "import torch\nMODEL = None  # a user's program\n"


def test_copy_model_file_copies_and_hashes(tmp_path):
    src = tmp_path / "my_model.py"
    src.write_text(MODEL_SRC)
    run = RunDir(tmp_path / "run")
    with run.lock():
        rel, sha = run.copy_model_file(src)
    assert rel == "model.py" and (run.path / rel).read_text() == MODEL_SRC
    assert sha == hashlib.sha256(MODEL_SRC.encode()).hexdigest() == run.manifest()[rel]["sha256"]
    assert stat.S_IMODE(os.stat(run.path / rel).st_mode) == 0o644


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: None, "does not exist"),
        (lambda p: p.write_text("Dear diary,\nthis is not code.\n"), "not a Python program"),
        (lambda p: p.write_bytes(b"\x89PNG\x00\xff"), "not a Python program"),
    ],
)
def test_copy_model_file_refuses_what_is_not_a_program(tmp_path, make, match):
    src = tmp_path / "model_src.py"
    make(src)
    run = RunDir(tmp_path / "run")
    with run.lock():
        before = snapshot(tmp_path)
        with pytest.raises(UserError, match=match):
            run.copy_model_file(src)
    assert snapshot(tmp_path) == before


def test_untrusted_model_code_is_refused_until_trusted(tmp_path):
    sha = hashlib.sha256(MODEL_SRC.encode()).hexdigest()
    with pytest.raises(UserError, match="pass --trust"):
        trust.check_trusted(sha, trust_flag=False)
    trust.check_trusted(sha, trust_flag=True)
    assert not trust.trusted_path().exists()  # --trust alone records nothing
    trust.trust_hash(sha)
    trust.check_trusted(sha, trust_flag=False)
    assert trust.trusted_path() == tmp_path / "xdg" / "ppl-vae" / "trusted.json"
    assert json.loads(trust.trusted_path().read_text()) == {"sha256": [sha]}
    trust.trust_hash(sha)  # idempotent
    assert json.loads(trust.trusted_path().read_text()) == {"sha256": [sha]}
    with pytest.raises(UserError, match="not a SHA-256"):
        trust.trust_hash("../../etc")


def test_trusted_list_defaults_to_home_config_and_refuses_damage(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert trust.trusted_path() == tmp_path / "home" / ".config" / "ppl-vae" / "trusted.json"
    trust.trusted_path().parent.mkdir(parents=True)
    trust.trusted_path().write_text("[]")
    with pytest.raises(UserError, match="is damaged"):
        trust.check_trusted("0" * 64, False)


def test_model_file_checks_confinement_hash_and_trust(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(MODEL_SRC)
    run = RunDir(tmp_path / "run")
    with run.lock():
        rel, sha = run.copy_model_file(src)
    with pytest.raises(UserError, match="--trust"):
        trust.model_file(run, rel, sha)
    assert trust.model_file(run, rel, sha, trust=True) == (run.path / rel).resolve()
    trust.trust_hash(sha)
    assert trust.model_file(run, rel, sha) == (run.path / rel).resolve()
    with pytest.raises(UserError, match="leaves the run"):
        trust.model_file(run, "../m.py", sha, trust=True)
    (run.path / rel).write_text(MODEL_SRC + "import os; os.system('rm -rf ~')\n")
    with pytest.raises(UserError, match="changed since training"):
        trust.model_file(run, rel, sha, trust=True)
    (run.path / rel).unlink()
    (run.path / rel).symlink_to(src)  # same bytes, but not a file the run wrote
    with pytest.raises(UserError, match="not a model file this run wrote|symlink"):
        trust.model_file(run, rel, sha, trust=True)


# ----------------------------------------------------------------------- fingerprints


def test_data_fingerprints(tmp_path):
    data = tmp_path / "d.npz"
    data.write_bytes(b"a" * 3_000_000)
    sha = fingerprint.sha256_file(data)
    assert sha == hashlib.sha256(b"a" * 3_000_000).hexdigest()
    assert fingerprint.check_fingerprint(data, sha) is None
    assert fingerprint.check_fingerprint(data, None) is None  # runs that recorded nothing
    data.write_bytes(b"b" * 3_000_000)
    with pytest.raises(UserError, match="changed since the run was trained"):
        fingerprint.check_fingerprint(data, sha)
    assert "changed" in fingerprint.check_fingerprint(data, sha, warn_only=True)
    data.unlink()
    with pytest.raises(UserError, match="does not exist"):
        fingerprint.check_fingerprint(data, sha)


def test_check_is_fast_and_writes_nothing_on_a_big_run(tmp_path):
    run = written_run(tmp_path / "run")
    before = snapshot(tmp_path)
    t = time.perf_counter()
    for _ in range(20):
        with pytest.raises(UserError):
            run.check(False, False)
    assert time.perf_counter() - t < 2
    assert snapshot(tmp_path) == before
