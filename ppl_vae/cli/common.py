"""Flags shared by the commands that train (``train``, ``compare``, ``sweep``).

Every value is checked once, by the job (:meth:`~ppl_vae.infer.config.TrainConfig.validate`
and :mod:`ppl_vae.validate`: one ``error:`` line, exit 2, nothing written); this module
imports no torch or Pyro, so ``--help`` answers at once. The flags the user typed are
remembered, so ``--resume`` compares only those with the saved run and a model's
recommended settings replace only the others."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from ppl_vae import validate
from ppl_vae.data.sources import BINARIZE, SOURCES, parse_binarize
from ppl_vae.errors import UserError
from ppl_vae.infer.config import (
    BETA_SCHEDULES,
    ELBO_KINDS,
    LR_SCHEDULES,
    MMD_KERNELS,
    OBJECTIVES,
    OPTIMIZERS,
    TrainConfig,
)
from ppl_vae.runs.config import RunConfig


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        action=Given,
        default="digits",
        help=f"{' | '.join(SOURCES)} | FILE.npz",
    )
    g.add_argument(
        "--data-root",
        action=Given,
        help="folder holding MNIST/, FashionMNIST/ or KMNIST/ (torchvision layout), or the "
        "original dSprites .npz",
    )
    g.add_argument("--download", action="store_true", help="download MNIST-style data if missing")
    g.add_argument(
        "--binarize",
        action=Given,
        default="none",
        metavar="MODE",
        type=binarize_mode,
        help=f"{' | '.join(BINARIZE)} | threshold:T (pixels above T in [0, 1) become 1)",
    )
    g.add_argument(
        "--labels",
        action=Given,
        type=int,
        metavar="N",
        help="keep N training labels (stratified), hide the rest: semi-supervised training",
    )
    add_input_args(g)


# -- inputs by name (issue 28): --arg, --image-shape ---------------------------------------
def add_input_args(g) -> None:
    g.add_argument(
        "--arg",
        dest="inputs",
        action=AppendGiven,
        default=[],
        metavar="PARAM=ARRAY|VALUE",
        help="fill the programs' parameter PARAM from the data's array ARRAY (a rename), or "
        'with a constant VALUE given as JSON (5, 0.2, true, "text", {"num_topics": 8}: an '
        "object reads by attribute too); repeatable. Parameters are otherwise filled from "
        "the arrays of their own name, or keep their defaults",
    )
    g.add_argument(
        "--image-shape",
        action=Given,
        type=image_shape,
        metavar="C,H,W",
        help="the shape of one example of the data view, so flattened rows get their "
        "pictures: --image-shape 1,28,28 for (N, 784) MNIST rows",
    )


class AppendGiven(argparse.Action):
    """Append the value and note that the user gave the flag."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [*getattr(namespace, self.dest, []), values])
        setattr(namespace, f"_given_{self.dest}", True)


def image_shape(text: str) -> list[int]:
    """``C,H,W`` (or ``H,W``) as positive whole numbers."""
    try:
        shape = [int(s) for s in text.split(",")]
    except ValueError:
        shape = []
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not C,H,W (or H,W) of positive whole numbers, e.g. 1,28,28"
        )
    return shape


def input_specs(items: list[str]) -> dict[str, str]:
    """``--arg`` options as ``{PARAM: SPEC}`` (SPEC resolved against the data's arrays
    when the programs are built: :meth:`ppl_vae.inputs.Inputs.parse`)."""
    out: dict[str, str] = {}
    for item in items:
        param, sep, spec = item.partition("=")
        if not sep or not param.isidentifier():
            raise UserError(f"--arg {item!r} is not PARAM=ARRAY or PARAM=VALUE (a JSON value)")
        out[param] = spec
    return out


# -- end of inputs by name -------------------------------------------------------------------


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (passed only when given; each model has defaults)")
    g.add_argument("--latent-dim", type=int, help="dimension of z")
    g.add_argument("--hidden", help="hidden layer widths, e.g. 256 or 512,256")
    g.add_argument(
        "--likelihood",
        help="bernoulli | gaussian | continuous-bernoulli (gaussian:S fixes the scale)",
    )
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other constructor argument of the model, e.g. --set l1=0.1 (repeatable)",
    )


def binarize_mode(text: str) -> str:
    """``--binarize`` checked by the data module (``threshold:T`` included)."""
    try:
        parse_binarize(text)
    except Exception as exc:  # argparse turns this into one usage line
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


class Given(argparse.Action):
    """Store the value and note that the user gave the flag (so a model's recommended
    training settings replace only the defaults the user did not override)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"_given_{self.dest}", True)


def numbers(kind: type) -> Callable[[str], list]:
    """An argparse type: numbers separated by commas (``0.9,0.999``), as a list."""

    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {kind.__name__} values separated by commas, got {text!r}"
            ) from None

    return parse


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("training")
    g.add_argument("--epochs", action=Given, type=int, default=d.epochs)
    g.add_argument("--batch-size", action=Given, type=int, default=d.batch_size)
    g.add_argument("--lr", action=Given, type=float, default=d.lr)
    g.add_argument("--lr-schedule", action=Given, default=d.lr_schedule, choices=LR_SCHEDULES)
    g.add_argument(
        "--lr-final", action=Given, type=float, default=d.lr_final, help="cosine: final lr / lr"
    )
    g.add_argument("--seed", action=Given, type=int, default=d.seed)
    g.add_argument("--device", action=Given, default=d.device, help="auto | cpu | cuda")
    g.add_argument("--elbo", action=Given, default=d.elbo, choices=ELBO_KINDS)
    g.add_argument("--num-particles", action=Given, type=int, default=d.num_particles)
    g.add_argument("--beta", action=Given, type=float, default=d.beta, help="weight of the KL term")
    g.add_argument(
        "--beta-schedule",
        action=Given,
        default=d.beta_schedule,
        choices=BETA_SCHEDULES,
    )
    g.add_argument("--warmup-steps", action=Given, type=int, default=d.warmup_steps)
    g.add_argument(
        "--cycles", action=Given, type=int, default=d.cycles, help="cycles of the cyclical schedule"
    )
    g.add_argument(
        "--objective",
        action=Given,
        default=d.objective,
        choices=tuple(OBJECTIVES),
        help="elbo (beta-weighted), capacity (gamma*|KL - C|, C rising to --capacity-max), "
        "iwae (the importance-weighted bound with --num-particles K samples), tcvae "
        "(beta-TCVAE: --beta weights the total correlation alone), miwae (--miwae-groups M "
        "IWAE bounds of K samples, averaged) or ciwae (--ciwae-beta * ELBO + (1 - it) * IWAE "
        "on the same K samples), wae (WAE-MMD: reconstruction + --mmd-lambda x MMD of the "
        "batch's codes to the prior) or infovae (InfoVAE: (1 - --info-alpha) x KL + "
        "(alpha + lambda - 1) x MMD)",
    )
    g.add_argument(
        "--miwae-groups",
        action=Given,
        type=int,
        default=d.miwae_groups,
        metavar="M",
        help="miwae: independent groups of --num-particles K draws per example",
    )
    g.add_argument(
        "--ciwae-beta",
        action=Given,
        type=float,
        default=d.ciwae_beta,
        help="ciwae: the ELBO's share in [0, 1] (1: the ELBO, 0: the IWAE bound)",
    )
    g.add_argument(
        "--mmd-kernel", action=Given, default=d.mmd_kernel, choices=MMD_KERNELS, help="wae, infovae"
    )
    g.add_argument(
        "--mmd-lambda",
        action=Given,
        type=float,
        default=d.mmd_lambda,
        help="wae, infovae: the MMD's weight lambda, per example",
    )
    g.add_argument(
        "--info-alpha",
        action=Given,
        type=float,
        default=d.info_alpha,
        help="infovae: alpha (the KL weighs 1 - alpha; 0 keeps the ELBO's KL)",
    )
    g.add_argument(
        "--gamma", action=Given, type=float, default=d.gamma, help="capacity objective weight"
    )
    g.add_argument(
        "--capacity-max",
        action=Given,
        type=float,
        default=d.capacity_max,
        help="final C, nats/example",
    )
    g.add_argument(
        "--capacity-steps",
        action=Given,
        type=int,
        default=d.capacity_steps,
        help="steps for C to rise",
    )
    g.add_argument(
        "--checkpoint-every",
        action=Given,
        type=int,
        default=d.checkpoint_every,
        metavar="N",
        help="also checkpoint every N steps inside an epoch, so a crash loses at most N "
        "steps (default: at epoch ends only)",
    )
    g.add_argument(
        "--early-stopping",
        action=Given,
        type=validate.parse_value,
        default=d.early_stopping,
        metavar="true|false",
        help="hold out a fixed 10%% of the training rows, stop after --patience epochs "
        "without a better validation ELBO and keep the best epoch's weights",
    )
    g.add_argument(
        "--patience", action=Given, type=int, default=d.patience, help="epochs without gain"
    )
    g.add_argument(
        "--tolerance",
        action=Given,
        type=float,
        default=d.tolerance,
        help="full-batch deterministic losses: stop once the relative change of the loss "
        "stays below this for --patience epochs (0: off)",
    )
    g.add_argument(
        "--optimizer",
        action=Given,
        default=d.optimizer,
        choices=OPTIMIZERS,
        help="adam (default), adamw, clipped_adam and adagrad_rmsprop (Pyro's), sgd, "
        "adagrad, rmsprop (options below), or lbfgs: full-batch L-BFGS with a strong-Wolfe "
        "line search, 20 iterations an epoch, the programs' random draws fixed for the run (needs "
        "--batch-size at least the training rows and an objective without schedules)",
    )
    g.add_argument(
        "--grad-tolerance",
        action=Given,
        type=float,
        default=d.grad_tolerance,
        help="full-batch losses: stop once the gradient's norm falls below this fraction "
        "of its norm before the first step (0: off)",
    )
    # -- the optimizer's options (ppl_vae.infer.optim); unset: the optimizer's own default
    o = p.add_argument_group("optimizer options (unset: the optimizer's own default)")
    o.add_argument(
        "--weight-decay",
        action=Given,
        type=float,
        default=d.weight_decay,
        help="adam, adamw (decoupled), clipped_adam, sgd, adagrad, rmsprop",
    )
    o.add_argument(
        "--betas",
        action=Given,
        type=numbers(float),
        default=d.betas,
        help="adam, adamw, clipped_adam: beta1,beta2 (e.g. 0.95,0.999)",
    )
    o.add_argument(
        "--momentum",
        action=Given,
        type=float,
        default=d.momentum,
        help="sgd, rmsprop; adagrad_rmsprop's t",
    )
    o.add_argument(
        "--clip-norm",
        action=Given,
        type=float,
        default=d.clip_norm,
        help="clipped_adam: each gradient element clamped to [-C, C] (Pyro's, 10)",
    )
    o.add_argument(
        "--lrd",
        action=Given,
        type=float,
        default=d.lrd,
        help="clipped_adam: the lr multiplied by this before every step (Pyro's, 1)",
    )
    o.add_argument(
        "--grad-clip",
        action=Given,
        type=float,
        default=d.grad_clip,
        help="rescale the whole gradient to at most this norm each step (0: off)",
    )
    o.add_argument(
        "--lr-gamma",
        action=Given,
        type=float,
        default=d.lr_gamma,
        help="--lr-schedule step, multistep, exponential: the factor",
    )
    o.add_argument(
        "--lr-step-size",
        action=Given,
        type=int,
        default=d.lr_step_size,
        help="--lr-schedule step: optimizer steps between decays",
    )
    o.add_argument(
        "--lr-milestones",
        action=Given,
        type=numbers(int),
        default=d.lr_milestones,
        help="--lr-schedule multistep: the steps of the decays, e.g. 1000,3000",
    )
    o.add_argument(
        "--renyi-alpha",
        action=Given,
        type=float,
        default=d.renyi_alpha,
        help="--elbo renyi: the order of the bound (Pyro's default 0: the IWAE bound)",
    )
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    g.add_argument(
        "--no-jit",
        action="store_true",
        help="run the programs through Pyro every step instead of replaying a checked trace "
        "of the loss (same results, slower; for programs whose trace cannot be checked)",
    )
    g.add_argument(
        "--compile",
        action="store_true",
        help="also torch.compile the loss of the full batches (checked against the programs "
        "like the trace, else not used, with the reason in metrics.json); compiling takes "
        "about a minute, once per run",
    )


def add_monitor_args(p: argparse.ArgumentParser) -> None:
    """Live monitoring (``history.jsonl`` is always written; this adds TensorBoard)."""
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard event files into --out/tensorboard as training goes "
        "(every epoch-record scalar, learning rate, step time, reconstructions and samples, "
        "the configuration): tensorboard --logdir DIR. Needs pip install "
        "'ppl-vae[tensorboard]'; may change on --resume",
    )


def model_args(args: argparse.Namespace) -> dict[str, Any]:
    """The constructor options the user gave, checked (the model's signature is checked
    when the model is built)."""
    out: dict[str, Any] = {}
    if args.latent_dim is not None:
        out["latent_dim"] = validate.latent_dim(args.latent_dim)
    if args.hidden is not None:
        out["hidden"] = list(validate.hidden(args.hidden))
    if args.likelihood is not None:
        out["likelihood"] = args.likelihood
    for key, value in validate.parse_set(args.set).items():
        if key in ("latent_dim", "hidden"):
            value = validate.KNOWN[key](value)
        out[key] = value
    return out


#: TrainConfig fields that have no training flag of their own.
NOT_FLAGS = {"eval_batch_size", "progress", "schedule_epochs", "jit", "compile"}
#: The training flags: every other TrainConfig field (``--batch-size`` is ``batch_size``).
TRAIN_FLAGS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in NOT_FLAGS)
DATA_FLAGS = ("data", "data_root", "binarize", "labels", "inputs", "image_shape")


def explicit_train_flags(args: argparse.Namespace) -> list[str]:
    """The training flags the user typed (their values differ from argparse's sentinel)."""
    return [k for k in TRAIN_FLAGS if getattr(args, f"_given_{k}", False)]


def train_config(args: argparse.Namespace) -> TrainConfig:
    values = {k: getattr(args, k) for k in TRAIN_FLAGS}
    config = TrainConfig(
        **values, progress=not args.no_progress, jit=not args.no_jit, compile=args.compile
    )
    return config


def run_config(args: argparse.Namespace, model: str) -> RunConfig:
    """The run the flags describe, every value checked."""
    given = [k for k in DATA_FLAGS if getattr(args, f"_given_{k}", False)]
    return RunConfig(
        model=model,
        model_args=model_args(args),
        data=args.data,
        data_root=args.data_root,
        download=args.download,
        binarize=args.binarize,
        labels=validate.labels(args.labels) if args.labels is not None else None,
        inputs=input_specs(args.inputs),
        image_shape=args.image_shape,
        train=train_config(args),
        train_explicit=explicit_train_flags(args),
        given=given + explicit_train_flags(args),
    )
