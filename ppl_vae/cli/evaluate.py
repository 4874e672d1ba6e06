"""``ppl-vae evaluate DIR``: the ELBO and the importance-weighted log-likelihood of a run.

Writes ``DIR/evaluation.json`` (atomically) with, for ``--split test`` (the default),
``test_elbo``, ``test_log_likelihood`` (the importance-weighted estimate of the mean
:math:`\\log p(x)` per example with ``--iwae-samples K`` draws, in nats),
each beside its standard error over examples (``test_elbo_stderr``,
``test_log_likelihood_stderr``; the ELBO averaged over several draws per example),
``rate``, ``distortion`` (with ``rate_stderr``, ``distortion_stderr``), ``active_units``,
``kl_per_dim``, ``recon_mse``, ``iwae_samples``, ``elbo_draws``, ``split``, ``examples``,
``seed`` and ``seconds``, and what the figures are of, read off the traces:
``log_likelihood_of`` (``"x"``; ``"x, y"`` where the model scores the labels it is given,
so the estimate is of log p(x, y); ``"x | y"`` where they only condition it) and
``scored_sites``. With ``--split train`` the two split-specific keys are named
``train_elbo`` and ``train_log_likelihood`` (and ``..._stderr``), and the diagnostics are on
the training set. ``DIR/evaluation-train.json`` keeps the train split apart from the
test record, so the two never overwrite each other.

``--ais-steps T`` adds annealed importance sampling with ``--ais-chains C`` chains of HMC
on the first ``--ais-points N`` examples: ``test_log_likelihood_ais`` (a stochastic lower
bound that tightens with T) and, by bidirectional Monte Carlo on N points simulated from
the model, ``test_log_likelihood_upper`` (a stochastic upper bound on those points' mean
log p(x)), each with its ``_se``, and the settings, the HMC acceptance, the IW estimate on
the same points and the BDMC gap under ``ais``. A program that cannot have them (no
prior, a point-mass guide, data not simulated as one site) gets ``ais_note`` instead.

``--generation`` adds the quality of the model's samples, which a model without log p(x)
(a point-mass guide) has too: ``fd`` (the Fréchet distance between the features of as many
samples as the split has rows and of the split's images), ``precision`` and ``recall``
(Kynkäänniemi et al. 2019, k=3), each with its split-half ``_stderr``, and under
``generation`` the floor ``fd_floor`` (the data against itself) and the feature
classifier's record (its test accuracy, the data set's fingerprint). The classifier is a
small MLP trained on the data set's labelled train split on first use (seconds) and cached
in ``$PPL_VAE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/ppl-vae`` or ``~/.cache/ppl-vae``);
it is opt-in because it writes there, outside the run. Data without class labels gets a
``generation_note`` instead (see :mod:`ppl_vae.runs.generation`).

Example::

    ppl-vae evaluate runs/vae --iwae-samples 5000
    ppl-vae evaluate runs/ae --generation
    ppl-vae evaluate runs/vae --ais-steps 1000 --ais-points 100
"""

from __future__ import annotations

import argparse

SPLITS = ("test", "train")


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="ELBO and importance-weighted log p(x) of a trained run")
    p.add_argument("run_dir", help="a run directory written by `ppl-vae train --out`")
    p.add_argument(
        "--iwae-samples", type=int, default=1000, metavar="K", help="importance samples per example"
    )
    p.add_argument(
        "--ais-steps", type=int, default=0, metavar="T", help="annealing steps of AIS (0: no AIS)"
    )
    p.add_argument("--ais-chains", type=int, default=16, metavar="C", help="AIS chains per point")
    p.add_argument(
        "--ais-points",
        type=int,
        default=100,
        metavar="N",
        help="examples (and simulations) in AIS",
    )
    p.add_argument(
        "--generation",
        action="store_true",
        help="also the Frechet distance and precision/recall of the model's samples, in the "
        "features of the data set's classifier (trained on first use, cached in "
        "$PPL_VAE_CACHE_DIR or ~/.cache/ppl-vae)",
    )
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=100, help="examples per batch")
    p.add_argument("--chunk-size", type=int, help="particles per chunk (default: memory-bounded)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--trust", action="store_true", help="run the run's model.py though untrusted")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ppl_vae.runs.evaluate import evaluate_run, table  # heavy: imported only to run

    record, out, page = evaluate_run(
        args.run_dir,
        args.split,
        args.iwae_samples,
        seed=args.seed,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        device=args.device,
        trust=args.trust,
        progress=not args.no_progress,
        ais_steps=args.ais_steps,
        ais_chains=args.ais_chains,
        ais_points=args.ais_points,
        generation=args.generation,
    )
    print(table(record, args.split))
    print(f"wrote {out}")
    if page is not None:
        print(f"report: {page}")
    return 0
