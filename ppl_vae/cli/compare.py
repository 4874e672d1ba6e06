"""``ppl-vae compare --models vae,ae,pca --out DIR``: train several models on the same data
and split, and write ``comparison.csv``, ``comparison.md`` and ``comparison.png``.
``--generation`` adds the Fréchet distance and precision/recall of each model's samples
(:mod:`ppl_vae.runs.generation`), so models without log p(x) compare on generation too."""

from __future__ import annotations

import argparse

from ppl_vae import validate
from ppl_vae.cli import common
from ppl_vae.runs import config as defaults


def register(sub) -> None:
    p = sub.add_parser(
        "compare", help="train several models on the same data and tabulate them side by side"
    )
    p.add_argument(
        "--models",
        default=",".join(defaults.DEFAULT_MODELS),
        help="comma-separated model names (default: %(default)s)",
    )
    common.add_data_args(p)
    common.add_model_args(p)
    common.add_train_args(p)
    p.set_defaults(
        latent_dim=defaults.DEFAULT_LATENT_DIM,
        batch_size=defaults.DEFAULT_BATCH_SIZE,
        lr=defaults.DEFAULT_LR,
    )
    p.add_argument(
        "--iwae-samples",
        type=int,
        metavar="K",
        help="also score each model by the importance-weighted test log p(x) with K samples",
    )
    p.add_argument(
        "--generation",
        action="store_true",
        help="also the Frechet distance and precision/recall of each model's samples, beside "
        "IW log p(x) (a classifier of the data set is trained on first use and cached)",
    )
    p.add_argument("--out", required=True, help="folder: one run directory per model, plus tables")
    p.add_argument("--overwrite", action="store_true", help="replace earlier runs in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ppl_vae.runs import compare  # heavy: imported only to run

    models = compare.parse_models(args.models)
    base = common.run_config(args, models[0])
    shared = common.model_args(args)
    result = compare.compare(
        base,
        models,
        args.out,
        latent_dim=None,
        model_args=shared,
        overwrite=args.overwrite,
        iwae_samples=None
        if args.iwae_samples is None
        else validate.iwae_samples(args.iwae_samples),
        generation=args.generation,
    )
    print(compare.table(result.rows))
    print(f"wrote {result.out}/comparison.csv, comparison.md and comparison.png")
    return 0
