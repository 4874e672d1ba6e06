"""A whole ``ppl-vae train vae`` run against a hand-written PyTorch script, timed from outside.

Issue 11's and 23's end-to-end figure: the command a user types, imports, per-epoch
evaluation, checkpoints, figures and report included, against a script doing the same
training the way one writes it by hand, and against Pyro's tutorial loop (``SVI`` +
``Trace_ELBO`` + ``pyro.optim.Adam`` on the same networks). All three train the 784-400-20
MLP VAE (Bernoulli logits, Adam 1e-3, batch 128, ``randperm`` minibatches of a preloaded
tensor) and print the test ELBO each epoch. The data: 20000 training and 2000 test binary
28x28 images (noisy copies of 10 random prototypes), written to a temporary ``.npz``. The
three commands alternate (A B C, C B A, ...) and the medians of their wall-clock seconds
compare::

    python benchmarks/whole_run.py --repeats 5 [--epochs 3] [--train-rows 20000] [--extra=--no-jit]
    python benchmarks/whole_run.py --smoke     # does it still run? (tests/test_benchmarks.py)
    cd /tmp && python REPO/benchmarks/whole_run.py --suite-cmd "python -m ppl_vae" \
        --before-cmd "env PYTHONPATH=OLD_TREE python -m ppl_vae"   # two versions, interleaved

It prints one line per run and a JSON record (``suite_s``, ``hand_s``, ``pyro_s``, ``ratio``
= suite / hand, ``ratio_vs_pyro`` = suite / Pyro's loop, ``test_elbo``: each side's last
epoch, which agree when the three train the same workload). ``--smoke`` is no timing: one
repeat of one epoch on 512 rows, each side run in this interpreter (its script through
``runpy``, ppl-vae through ``ppl_vae.cli.main``), so the suite can check in a few seconds
that the scripts, the data and the command line still fit together.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import runpy
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

HAND = textwrap.dedent(
    """
    import sys
    import numpy as np, torch, torch.nn.functional as F
    from torch import nn
    torch.manual_seed(0)
    d = np.load(sys.argv[1]); epochs = int(sys.argv[2])
    # (N, 28, 28) images as (N, 784) rows, as ppl-vae's loader flattens them
    xtr, xte = (torch.from_numpy(d[k].reshape(len(d[k]), -1)) for k in ("x_train", "x_test"))
    enc = nn.Sequential(nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 40))
    dec = nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 784))
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    def neg_elbo(x):
        loc, raw = enc(x).chunk(2, -1)
        scale = F.softplus(raw) + 1e-4
        z = loc + scale * torch.randn_like(loc)
        rec = F.binary_cross_entropy_with_logits(dec(z), x, reduction="sum")
        kl = 0.5 * (loc.square() + scale.square() - 1).sum() - scale.log().sum()
        return rec + kl
    for epoch in range(epochs):
        total = torch.zeros(())
        for idx in torch.randperm(len(xtr)).split(128):
            loss = neg_elbo(xtr[idx]) / len(idx)
            opt.zero_grad(); loss.backward(); opt.step(); total += loss.detach() * len(idx)
        with torch.no_grad():
            print(epoch + 1, float(total) / len(xtr), -float(neg_elbo(xte)) / len(xte))
    """
)

# Pyro's tutorial loop (tutorials' vae.ipynb / examples/vae/vae.py): the same networks as
# HAND, written as a model and a guide, trained by ``SVI`` + ``Trace_ELBO`` +
# ``pyro.optim.Adam`` over the same minibatches, the test ELBO from ``svi.evaluate_loss``.
PYRO = textwrap.dedent(
    """
    import sys
    import numpy as np, torch, torch.nn.functional as F
    from torch import nn
    import pyro, pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam
    torch.manual_seed(0); pyro.set_rng_seed(0); pyro.clear_param_store()
    d = np.load(sys.argv[1]); epochs = int(sys.argv[2])
    xtr, xte = (torch.from_numpy(d[k].reshape(len(d[k]), -1)) for k in ("x_train", "x_test"))
    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 40))
            self.dec = nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 784))
        def model(self, x):
            pyro.module("decoder", self.dec)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 20), 1.0).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)
        def guide(self, x):
            pyro.module("encoder", self.enc)
            with pyro.plate("data", x.shape[0]):
                loc, raw = self.enc(x).chunk(2, -1)
                pyro.sample("z", dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1))
    vae = VAE()
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), loss=Trace_ELBO())
    for epoch in range(epochs):
        total = 0.0
        for idx in torch.randperm(len(xtr)).split(128):
            total += svi.step(xtr[idx])
        print(epoch + 1, total / len(xtr), -svi.evaluate_loss(xte) / len(xte))
    """
)


def make_data(path: Path, n_train: int = 20000, n_test: int = 2000) -> None:
    rng = np.random.default_rng(0)
    prototypes = rng.random((10, 784)) < 0.2
    which = rng.integers(0, 10, n_train + n_test)
    x = (prototypes[which] ^ (rng.random((n_train + n_test, 784)) < 0.05)).astype(np.float32)
    x = x.reshape(-1, 28, 28)  # images: (N, H, W) (rows would be drawn as no figures)
    np.savez(path, x_train=x[:n_train], x_test=x[n_train:])


def run(argv: list[str], in_process: bool = False) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system, the process and what it waited for: the
    figure worker) and standard output of one side: a fresh process, as a user runs it, or
    (``in_process``, the smoke mode) the same script or command line in this interpreter."""
    t0 = time.perf_counter()
    if not in_process:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(argv, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return wall, cpu, done.stdout
    out, saved, cpu0 = io.StringIO(), sys.argv, time.process_time()
    try:
        with contextlib.redirect_stdout(out):
            if argv[0] == "ppl-vae":
                from ppl_vae.cli import main as cli

                if cli(argv[1:]) != 0:
                    raise RuntimeError(f"ppl-vae failed: {argv}")
            else:
                sys.argv = argv[1:]
                runpy.run_path(argv[1], run_name="__main__")
    finally:
        sys.argv = saved
    return time.perf_counter() - t0, time.process_time() - cpu0, out.getvalue()


def last_test_elbo(side: str, stdout: str, run_dir: Path) -> float:
    """The final epoch's test ELBO (nats per example) a side reports: the scripts print
    ``epoch train_loss test_elbo`` lines, ppl-vae writes its history."""
    if side in ("suite", "before"):
        return json.loads((run_dir / "metrics.json").read_text())["history"][-1]["test_elbo"]
    return float(stdout.strip().splitlines()[-1].split()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-rows", type=int, default=20000)
    p.add_argument("--extra", default="", help="more ppl-vae train flags, space-separated")
    p.add_argument(
        "--suite-cmd",
        default="",
        help="the command that stands for ppl-vae, space-separated (another version: "
        "'env PYTHONPATH=OLD_TREE python -m ppl_vae', run from outside the repository, whose "
        "folder `python -m` would put first on the path); default: the ppl-vae beside python",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="check that it works, not a timing: 1 repeat of 1 epoch on 512 rows, each side "
        "run in this interpreter",
    )
    p.add_argument(
        "--before-cmd",
        default="",
        help="a second ppl-vae command (as --suite-cmd), timed as a fourth side 'before', "
        "interleaved with the others",
    )
    args = p.parse_args(argv)
    n_train, n_test = args.train_rows, 2000
    if args.smoke:
        args.repeats, args.epochs, n_train, n_test = 1, 1, 512, 128
    exe = Path(sys.executable)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, hand, tutorial = tmp / "mnistlike.npz", tmp / "hand.py", tmp / "pyro_loop.py"
        make_data(data, n_train, n_test)
        hand.write_text(HAND)
        tutorial.write_text(PYRO)
        suite = args.suite_cmd.split() or [str(exe.parent / "ppl-vae")]
        suite_cmd = [
            *(["ppl-vae"] if args.smoke else suite),
            "train",
            "vae",
            "--data",
            str(data),
            "--hidden",
            "400",
            "--latent-dim",
            "20",
            "--batch-size",
            "128",
            "--epochs",
            str(args.epochs),
            "--no-progress",
            "--overwrite",
            "--out",
            str(tmp / "run"),
            *args.extra.split(),
        ]
        commands = {
            "suite": suite_cmd,
            "hand": [str(exe), str(hand), str(data), str(args.epochs)],
            "pyro": [str(exe), str(tutorial), str(data), str(args.epochs)],
        }
        if args.before_cmd:
            commands["before"] = [*args.before_cmd.split(), *suite_cmd[len(suite) :]]
        sides = list(commands)
        times: dict[str, list[float]] = {side: [] for side in sides}
        cpu: dict[str, list[float]] = {side: [] for side in sides}
        elbo: dict[str, float] = {}
        for r in range(args.repeats):
            for side in sides if r % 2 == 0 else sides[::-1]:  # A B C, C B A, ...
                seconds, cpu_s, stdout = run(commands[side], args.smoke)
                times[side].append(seconds)
                cpu[side].append(cpu_s)
                elbo[side] = last_test_elbo(side, stdout, tmp / "run")
                print(f"repeat {r + 1} {side}: {seconds:.2f} s ({cpu_s:.2f} s CPU)", flush=True)
    med = {side: statistics.median(times[side]) for side in sides}
    med_cpu = {side: statistics.median(cpu[side]) for side in sides}
    record = {
        "suite_s": med["suite"],
        "hand_s": med["hand"],
        "pyro_s": med["pyro"],
        "ratio": med["suite"] / med["hand"],
        "ratio_vs_pyro": med["suite"] / med["pyro"],
        **times,
        "cpu_s": med_cpu,  # medians; on a shared machine steadier than wall seconds
        "cpu_ratio": med_cpu["suite"] / med_cpu["hand"],
        "cpu_ratio_vs_pyro": med_cpu["suite"] / med_cpu["pyro"],
        "test_elbo": elbo,  # the last epoch's, per side: the same workload lands alike
    }
    record["epochs"], record["train_rows"], record["extra"] = args.epochs, n_train, args.extra
    record["smoke"], record["suite_cmd"] = args.smoke, args.suite_cmd
    if args.before_cmd:
        record["before_s"], record["before_cmd"] = med["before"], args.before_cmd
        record["before_ratio"] = med["before"] / med["hand"]
        record["before_ratio_vs_pyro"] = med["before"] / med["pyro"]
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
