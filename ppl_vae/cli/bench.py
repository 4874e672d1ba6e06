"""``ppl-vae bench``: the suite's VAE training step against a hand-written PyTorch VAE.

Same architecture (MLP 784-400-20 by default), Bernoulli likelihood, initialisation
(weights copied), optimizer and minibatching on MNIST-sized random binary data; the two
are first checked to compute the same loss and gradients on the same batch and noise, then
timed in interleaved blocks in one process (see :mod:`ppl_vae.runs.bench`). Prints the median
milliseconds per step, the ratio suite/hand, examples per second and peak memory; with
``--compile`` also the step of ``train --compile`` (``compiled_ms``, ``compiled_ratio`` =
compiled/hand, ``compile``: how its loss ran); with ``--json`` a list of records (keys
``batch_size``, ``ratio``, ``suite_ms``, ``hand_ms``, ...).

Example::

    ppl-vae bench --device cpu --batch-sizes 16,128 --steps 100 --repeats 9
"""

from __future__ import annotations

import argparse

ABLATIONS = ("elbo", "adam", "permutation")  # ppl_vae.runs.bench.ABLATIONS, without its imports


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        message = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def register(sub) -> None:
    p = sub.add_parser("bench", help="time the training step against hand-written PyTorch")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-sizes", type=int_list, default=[16, 128, 1024], metavar="B,B,...")
    p.add_argument("--steps", type=int, default=50, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=5, help="timed blocks per side (medians)")
    p.add_argument("--hidden", type=int_list, default=[400], metavar="H,H,...")
    p.add_argument("--latent", type=int, default=20)
    p.add_argument("--x-dim", type=int, default=784)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--ablate",
        type=lambda s: [v for v in s.split(",") if v],
        default=[],
        metavar="NAME,...",
        help=f"revert fast-path changes to measure them: {', '.join(ABLATIONS)}",
    )
    p.add_argument(
        "--clock",
        default="wall",
        choices=("wall", "process"),
        help="wall-clock time, or this process's CPU time (steadier on a shared CPU)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time the step of train --compile (the loss torch.compile-d; compiling "
        "takes about a minute per batch size, before the timing)",
    )
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ppl_vae.runs import bench  # heavy: imported only to run

    records = bench.run(
        batch_sizes=args.batch_sizes,
        device=args.device,
        steps=args.steps,
        repeats=args.repeats,
        x_dim=args.x_dim,
        hidden=args.hidden,
        latent=args.latent,
        seed=args.seed,
        ablate=args.ablate,
        clock=args.clock,
        compile=args.compile,
        threads=args.threads,
    )
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        r = records[0]
        print(
            f"device={r['device']} threads={r['threads']} torch={r['torch']} pyro={r['pyro']} "
            f"net={r['architecture']} steps={r['steps']} repeats={r['repeats']} "
            f"ablate={','.join(r['ablate']) or 'none'} clock={r['clock']} "
            f"(peak MB suite/hand: {r['peak_memory']})"
        )
        print(bench.table(records))
    return 0
