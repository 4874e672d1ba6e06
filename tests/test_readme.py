"""The README's command-line block, run as written from a fresh folder with relative paths.

Only sizes shrink (:data:`SMALLER`: one epoch, a few importance samples and AIS steps), so
the suite stays quick; every command, flag and path is the README's own. The torchrun and
bench lines are left out: torchrun is tested with two processes in
``tests/infer/test_distributed.py``, and bench times the machine (``tests/runs/test_bench.py``).
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
import time
from pathlib import Path

import pytest

from ppl_vae.cli import main

ROOT = Path(__file__).resolve().parents[1]
#: (pattern, replacement): sizes only.
SMALLER = [
    (r"--epochs \d+", "--epochs 1"),
    (r"--iwae-samples \d+", "--iwae-samples 8"),
    (r"--ais-steps \d+", "--ais-steps 5 --ais-points 2 --ais-chains 2"),
]
#: Sizes the README leaves at their defaults, appended to its commands (a flag typed later
#: wins): NUTS and PSIS at a few points and draws, training in larger minibatches.
SIZES = {
    "analyze": "--points 6 --draws 200 --nuts-points 1 --chains 1 --nuts-samples 60 "
    "--nuts-warmup 60 --amortization-points 2",
}
TRAIN_BATCH = "--batch-size 256"
SKIPPED = ("ppl-vae bench",)


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Command line") :]
    block = block[block.index("```bash") + 7 : block.index("```", block.index("```bash") + 7)]
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    return [line for line in lines if line.startswith("ppl-vae ")]


def smaller(line: str) -> str:
    for pattern, replacement in SMALLER:
        line = re.sub(pattern, replacement, line)
    words = line.split()
    if words[1] in ("train", "sweep", "compare") and "--epochs" not in words:
        line += " --epochs 1"
    if "--resume" in words:
        line = line.replace("--epochs 1", "--epochs 2")  # continues the first run by one
    if words[1] in SIZES:
        line += " " + SIZES[words[1]]
    if words[1] in ("train", "sweep", "compare") and "--batch-size" not in words:
        line += " " + TRAIN_BATCH
    if words[1] == "disentangle":
        line += " --fast" if "--fast" in disentangle_flags() else ""
    return line


def disentangle_flags() -> str:
    from ppl_vae.cli import parser

    sub = parser()._subparsers._group_actions[0].choices["disentangle"]
    return " ".join(o for a in sub._actions for o in a.option_strings)


def test_the_readme_lists_its_commands():
    commands = readme_commands()
    assert len(commands) >= 20 and any(c.startswith("ppl-vae analyze runs/vae") for c in commands)


@pytest.mark.slow
def test_every_readme_command_runs_as_written_from_a_fresh_folder(tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for line in readme_commands():
        if line.startswith(SKIPPED):
            continue
        argv = shlex.split(smaller(line))[1:] + (["--no-progress"] if "train" in line else [])
        if argv[0] not in ("train", "sweep", "compare"):
            argv = [a for a in argv if a != "--no-progress"]
        start = time.perf_counter()
        rc = main(argv)
        print(f"{time.perf_counter() - start:6.1f} s  {line}", file=sys.__stderr__)
        out = capsys.readouterr()
        assert rc == 0, f"{line}\n{out.err[-2000:]}"
    for name in ("report.html", "evaluation.json", "calibration.json", "analysis/report.json"):
        assert (tmp_path / "runs" / "vae" / name).is_file(), name
    assert (tmp_path / "samples.png").is_file()
