"""Flags shared by the commands that train (``train``, ``compare``, ``sweep``).

The training flags are made from :class:`~ppl_vae.infer.config.TrainConfig`'s fields (each
field's default, choices, help and kind of flag: :func:`add_flag`), so a new training
option is a field there and nothing here. Every value is checked once, by the job
(:func:`~ppl_vae.runs.config.resolve`: one ``error:`` line, exit 2, nothing written); this
module imports no torch or Pyro, so ``--help`` answers at once. The flags the user typed
are recorded in ``typed`` (:class:`Typed`), so ``--resume`` compares only those with the
saved run and a model's recommended settings replace only the others."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from ppl_vae import validate
from ppl_vae.data.sources import BINARIZE, SOURCES, parse_binarize
from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.runs.config import TRAIN_FIELDS, RunConfig


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        action=Typed,
        default="digits",
        help=f"{' | '.join(SOURCES)} | FILE.npz",
    )
    g.add_argument(
        "--data-root",
        action=Typed,
        help="folder holding MNIST/, FashionMNIST/ or KMNIST/ (torchvision layout), or the "
        "original dSprites .npz",
    )
    g.add_argument("--download", action="store_true", help="download MNIST-style data if missing")
    g.add_argument(
        "--binarize",
        action=Typed,
        default="none",
        metavar="MODE",
        type=binarize_mode,
        help=f"{' | '.join(BINARIZE)} | threshold:T (pixels above T in [0, 1) become 1)",
    )
    g.add_argument(
        "--labels",
        action=Typed,
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
        action=AppendTyped,
        default=[],
        metavar="PARAM=ARRAY|VALUE",
        help="fill the programs' parameter PARAM from the data's array ARRAY (a rename), or "
        'with a constant VALUE given as JSON (5, 0.2, true, "text", {"num_topics": 8}: an '
        "object reads by attribute too); repeatable. Parameters are otherwise filled from "
        "the arrays of their own name, or keep their defaults",
    )
    g.add_argument(
        "--image-shape",
        action=Typed,
        type=image_shape,
        metavar="C,H,W",
        help="the shape of one example of the data view, so flattened rows get their "
        "pictures: --image-shape 1,28,28 for (N, 784) MNIST rows",
    )


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


class Typed(argparse.Action):
    """Store the value and record that the user typed the flag, in ``typed`` (the one
    record of what was typed: :attr:`~ppl_vae.runs.config.RunConfig.typed`). With
    ``nargs=0`` it stores ``const`` (``--compile``, ``--no-jit``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        typed = getattr(namespace, "typed", None) or set()
        namespace.typed = typed | {self.dest}


class AppendTyped(Typed):
    """Append the value (a repeatable flag) and record that the user typed the flag."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, [*(getattr(namespace, self.dest) or []), values])


def add_train_args(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field, made from the field's metadata
    (:func:`ppl_vae.infer.config.option`): ``--name VALUE``, ``--name`` or ``--no-name``,
    with the field's default, choices and help."""
    g = p.add_argument_group("training")
    for f in dataclasses.fields(TrainConfig):
        add_flag(g, f)


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


def parser_for(annotation: str) -> Callable[[str], Any] | None:
    """How a flag's text becomes a field's value, read off the field's annotation (``int``,
    ``float | None``, ``list[int]``...); the value is then checked by the field's check
    (``--early-stopping yes`` is refused there, in one line)."""
    kind = str(annotation).replace(" | None", "")
    scalars = {
        "int": int,
        "float": float,
        "bool": lambda text: {"true": True, "false": False}.get(text, text),
    }
    if kind.startswith("list[") and kind[5:-1] in scalars:
        return numbers(scalars[kind[5:-1]])
    return scalars.get(kind)


def add_flag(g: Any, f: dataclasses.Field) -> None:
    """The flag of one :class:`TrainConfig` field (none where ``cli`` is None)."""
    meta, name = f.metadata, f.name.replace("_", "-")
    kind = {"negate": (f"--no-{name}", False), "switch": (f"--{name}", True)}.get(meta["cli"])
    if kind is not None:
        flag, const = kind
        g.add_argument(
            flag,
            dest=f.name,
            action=Typed,
            nargs=0,
            const=const,
            default=f.default,
            help=meta["help"],
        )
    elif meta["cli"] == "flag":
        g.add_argument(
            f"--{name}",
            dest=f.name,
            action=Typed,
            type=parser_for(f.type),
            default=f.default_factory() if f.default is dataclasses.MISSING else f.default,
            choices=meta["choices"] or None,
            metavar=meta["metavar"],
            help=meta["help"],
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


def run_config(
    args: argparse.Namespace, model: str | None, file: RunConfig | None = None
) -> RunConfig:
    """The run the flags describe, over a ``--config`` file's (``file``): the flags the
    user typed win, then the file, then the command's defaults. ``typed`` records what the
    flags and the file set; every value is checked once, by the job."""
    flags = set(getattr(args, "typed", None) or ())
    if file is None:
        file = RunConfig(model=model or "", typed=frozenset())
        train = {k: getattr(args, k) for k in TRAIN_FIELDS if hasattr(args, k)}
        run = {k: getattr(args, k) for k in DATA_FLAGS}
    else:
        train = {k: getattr(args, k) for k in flags & set(TRAIN_FIELDS)}
        run = {k: getattr(args, k) for k in flags & set(DATA_FLAGS)}
    if run.get("labels") is not None:
        run["labels"] = validate.labels(run["labels"])
    if "inputs" in run:
        run["inputs"] = input_specs(run["inputs"] or [])
    return file.replace(
        model=model or file.model,
        model_args={**file.model_args, **model_args(args)},
        train=file.train.replace(**train),
        typed=frozenset(flags | set(file.typed or ())),
        **run,
        **({"download": True} if args.download else {}),
    )


DATA_FLAGS = ("data", "data_root", "binarize", "labels", "inputs", "image_shape")
