"""A whole ``ppl-vae train vae`` run against a hand-written PyTorch script, timed from outside.

Issue 11's end-to-end figure: the command a user types, imports, per-epoch evaluation,
checkpoints, figures and report included, against a script doing the same training the
way one writes it by hand (the 784-400-20 MLP VAE, Bernoulli logits, Adam 1e-3, batch 128,
``randperm`` minibatches of a preloaded tensor, the test ELBO printed each epoch). The
data: 20000 training and 2000 test binary 28x28 images (noisy copies of 10 random
prototypes), written to a temporary ``.npz``. The two commands alternate (A B, B A, ...)
and the medians of their wall-clock seconds compare::

    python benchmarks/whole_run.py --repeats 5 [--epochs 3] [--extra=--no-jit]

It prints one line per run and a JSON record (``suite_s``, ``hand_s``, ``ratio``).
"""

from __future__ import annotations

import argparse
import json
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
    xtr, xte = torch.from_numpy(d["x_train"]), torch.from_numpy(d["x_test"])
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


def make_data(path: Path) -> None:
    rng = np.random.default_rng(0)
    prototypes = rng.random((10, 784)) < 0.2
    which = rng.integers(0, 10, 22000)
    x = (prototypes[which] ^ (rng.random((22000, 784)) < 0.05)).astype(np.float32)
    np.savez(path, x_train=x[:20000], x_test=x[20000:])


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--extra", default="", help="more ppl-vae train flags, space-separated")
    args = p.parse_args()
    exe = Path(sys.executable)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, hand = tmp / "mnistlike.npz", tmp / "hand.py"
        make_data(data)
        hand.write_text(HAND)
        suite_cmd = [
            str(exe.parent / "ppl-vae"),
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
        hand_cmd = [str(exe), str(hand), str(data), str(args.epochs)]
        times: dict[str, list[float]] = {"suite": [], "hand": []}
        for r in range(args.repeats):
            order = ("suite", "hand") if r % 2 == 0 else ("hand", "suite")
            for side in order:
                seconds = timed(suite_cmd if side == "suite" else hand_cmd)
                times[side].append(seconds)
                print(f"repeat {r + 1} {side}: {seconds:.2f} s", flush=True)
    suite_s, hand_s = statistics.median(times["suite"]), statistics.median(times["hand"])
    record = {"suite_s": suite_s, "hand_s": hand_s, "ratio": suite_s / hand_s, **times}
    record["epochs"], record["extra"] = args.epochs, args.extra
    print(json.dumps(record))


if __name__ == "__main__":
    main()
