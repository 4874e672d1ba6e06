"""Option checks: the values issue 10 lists are refused with one line naming the option;
properties over generated values: a check returns a value inside its documented bounds
or raises UserError, never another exception."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppl_vae import validate as v
from ppl_vae.errors import UserError

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(-5, 10**6), max_size=4),
)


def one_line_user_error(fn, *args):
    with pytest.raises(UserError) as info:
        fn(*args)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("spec", ["abc", "0", "-3", "", " ", "512,,256", "1.5", "64,abc", "1e3"])
def test_bad_hidden_is_refused(spec):
    assert "--hidden" in one_line_user_error(v.hidden, spec)


@pytest.mark.parametrize(
    "spec, widths",
    [("512,256", (512, 256)), ("64", (64,)), (" 8 , 4 ", (8, 4)), (32, (32,)), ([4, 2], (4, 2))],
)
def test_good_hidden_is_parsed(spec, widths):
    assert v.hidden(spec) == widths


@settings(max_examples=150, deadline=None)
@given(st.one_of(anything, st.text(alphabet="0123456789,- ", max_size=12)))
def test_hidden_returns_bounded_widths_or_refuses(spec):
    try:
        widths = v.hidden(spec)
    except UserError:
        return
    assert 1 <= len(widths) <= v.MAX_LAYERS and all(1 <= w <= v.MAX_WIDTH for w in widths)
    assert all(type(w) is int for w in widths)


@pytest.mark.parametrize(
    "check, value, message",
    [
        (v.latent_dim, -2, "--latent-dim must be at least 1"),
        (v.latent_dim, 0, "--latent-dim must be at least 1"),
        (v.latent_dim, 1_000_000_000, "--latent-dim must be at most 4096"),
        (v.latent_dim, 2.5, "--latent-dim must be a whole number"),
        (v.latent_dim, "2", "whole number"),
        (v.latent_dim, True, "whole number"),
        (v.lr, math.inf, "--lr must be a finite number"),
        (v.lr, math.nan, "--lr must be a finite number"),
        (v.lr, 0.0, "--lr must be positive"),
        (v.lr_final, -1, "--lr-final must be positive"),
        (v.lr_final, 2.0, "--lr-final must be at most 1"),
        (v.beta, math.inf, "--beta must be a finite number"),
        (v.beta, 0, "--beta must be positive"),
        (v.seed, -1, "--seed must be at least 0"),
        (v.seed, 2**32, "--seed must be at most"),
        (v.warmup_steps, -5, "--warmup-steps must be at least 0"),
        (v.cycles, 0, "--cycles must be at least 1"),
        (v.epochs, 0, "--epochs must be at least 1"),
        (v.batch_size, 0, "--batch-size must be at least 1"),
        (v.batch_size, 2**40, "--batch-size must be at most"),
        (v.num_particles, 0, "--num-particles must be at least 1"),
        (v.sample_count, 100_000_000, "-n must be at most 100000"),
        (v.chunk_size, 1_000_000, "--chunk-size must be at most 65536"),
        (v.iwae_samples, 0, "--iwae-samples must be at least 1"),
        (v.capacity_max, -1, "--capacity-max must be at least 0"),
    ],
)
def test_issue_10_values_are_refused_naming_the_option(check, value, message):
    assert message in one_line_user_error(check, value)


@pytest.mark.parametrize(
    "check, value, expected",
    [
        (v.latent_dim, 4096, 4096),
        (v.latent_dim, 3.0, 3),
        (v.lr, 1e-3, 1e-3),
        (v.lr_final, 1, 1.0),
        (v.seed, 0, 0),
        (v.seed, 2**32 - 1, 2**32 - 1),
        (v.warmup_steps, 0, 0),
        (v.sample_count, 64, 64),
        (v.capacity_max, 0, 0.0),
    ],
)
def test_boundary_values_are_accepted(check, value, expected):
    result = check(value)
    assert result == expected and type(result) is type(expected)


BOUNDED_INTS = [
    (v.latent_dim, 1, v.MAX_LATENT),
    (v.seed, 0, v.MAX_SEED - 1),
    (v.warmup_steps, 0, v.MAX_STEPS),
    (v.cycles, 1, v.MAX_CYCLES),
    (v.epochs, 1, v.MAX_EPOCHS),
    (v.batch_size, 1, v.MAX_BATCH),
    (v.num_particles, 1, v.MAX_PARTICLES),
    (v.sample_count, 1, v.MAX_SAMPLES),
    (v.chunk_size, 1, v.MAX_CHUNK),
    (v.iwae_samples, 1, v.MAX_IWAE),
]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(BOUNDED_INTS), st.one_of(anything, st.integers(-(2**70), 2**70)))
def test_integer_checks_accept_exactly_their_range(case, value):
    check, low, high = case
    inside = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and float(value).is_integer()
        and low <= value <= high
    )
    if inside:
        assert check(value) == value and type(check(value)) is int
    else:
        with pytest.raises(UserError):
            check(value)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([v.lr, v.beta, v.lr_final]), anything)
def test_real_checks_return_finite_positive_or_refuse(check, value):
    try:
        x = check(value)
    except UserError:
        return
    assert math.isfinite(x) and x > 0 and (check is not v.lr_final or x <= 1)


def test_every_training_field_is_checked_by_its_own_check():
    """Each field of TrainConfig carries its check: a whole config passes, one bad field
    is refused naming its flag."""
    from ppl_vae.infer.config import TrainConfig

    good = {"epochs": 2, "batch_size": 32, "lr": 1e-3, "lr_final": 0.01, "seed": 0,
            "beta": 1.0, "warmup_steps": 0, "cycles": 4, "gamma": 100.0, "capacity_max": 10.0,
            "capacity_steps": 1000, "num_particles": 1, "eval_batch_size": 1000,
            "device": "cpu", "progress": False}  # fmt: skip
    TrainConfig(**good).validate()
    for key, bad in [("epochs", 0), ("lr_final", -1), ("cycles", 0), ("warmup_steps", -5),
                     ("eval_batch_size", 0), ("patience", 0), ("schedule_epochs", 0)]:  # fmt: skip
        with pytest.raises(UserError, match=v.flag(key)):
            TrainConfig(**{**good, key: bad}).validate()


# ----------------------------------------------------------------- --set and signatures


class Model:
    def __init__(
        self,
        x_dim: int,
        latent_dim: int = 2,
        hidden: Sequence[int] | str = (256,),
        likelihood: str = "bernoulli",
        l1: float = 0.1,
        tied: bool = False,
        scale=1.0,
        extra: dict | None = None,
    ):
        pass


def test_parse_set_types_values_like_json():
    assert v.parse_set(["l1=0.5", "hidden=[64,32]", "tied=true", 'likelihood="gaussian:0.1"',
                        "latent-dim=3", "extra=null", 's=""']) == {  # fmt: skip
        "l1": 0.5, "hidden": [64, 32], "tied": True, "likelihood": "gaussian:0.1",
        "latent_dim": 3, "extra": None, "s": "",
    }  # fmt: skip
    for bad in ["novalue", "=3", "a b=1", "1x=2"]:
        with pytest.raises(UserError, match="KEY=VALUE"):
            v.parse_set([bad])


@pytest.mark.parametrize("item", ["invariances=['r','t']", "likelihood=gaussian", "s=", "a=[1,"])
def test_set_refuses_what_is_not_json_in_one_line(item):
    """``--set`` values are JSON; anything else is refused, saying so, instead of staying a
    string that fails later as an unrelated TypeError."""
    message = one_line_user_error(v.parse_set, [item])
    assert "is not JSON" in message and item.partition("=")[0] in message


@pytest.mark.parametrize(
    "items, message",
    [
        (["latent_dim=2.5"], "--latent-dim must be a whole number"),
        (["likelihood=5"], "likelihood must be str, got int"),
        (["x_dim=5"], "x_dim is not an option: it comes from the data"),
        (['hidden="abc"'], "--hidden"),
        (["hidden=0"], "--hidden must be at least 1"),
        (['l1="a"'], "l1 must be float"),
        (["l1=NaN"], "finite"),
        (["tied=1"], "tied must be bool"),
        (['scale="big"'], "scale must be float"),
        (["nope=1"], "does not take nope; it takes extra, hidden, l1, latent_dim"),
    ],
)
def test_set_values_are_checked_against_the_signature(items, message):
    assert message in one_line_user_error(v.model_options, Model, v.parse_set(items))


def test_good_set_values_are_normalised():
    items = ["latent_dim=3.0", 'hidden="64,32"', "l1=1", 'extra={"a": 1}', 'likelihood="gaussian"']
    opts = v.model_options(Model, v.parse_set(items))
    expected = {"latent_dim": 3, "hidden": [64, 32], "l1": 1, "extra": {"a": 1}}
    assert opts == {**expected, "likelihood": "gaussian"}
    assert type(opts["latent_dim"]) is int


def test_the_suite_models_signatures_are_readable():
    from ppl_vae import registry

    for name in registry.names():
        cls = registry.resolve(name).factory
        params = v.signature_types(cls)
        assert "x_dim" in params
        with pytest.raises(UserError, match="x_dim"):
            v.model_options(cls, {"x_dim": 5})
        if "latent_dim" in params:
            assert v.model_options(cls, {"latent_dim": 2}) == {"latent_dim": 2}


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["latent_dim", "hidden", "likelihood", "l1", "tied", "scale", "x_dim", "q"]),
    st.one_of(anything, st.text(max_size=8)),
)
def test_model_options_accepts_or_refuses_never_crashes(key, value):
    try:
        out = v.model_options(Model, {key: value})
    except UserError:
        return
    assert key in out and key != "x_dim"


def test_validate_does_not_import_torch():
    code = (
        "import sys, importlib.util\n"
        "spec = importlib.util.spec_from_file_location('validate', 'ppl_vae/validate.py')\n"
        "sys.modules['ppl_vae'] = type(sys)('ppl_vae')\n"
        "errors = sys.modules['ppl_vae.errors'] = type(sys)('e')\n"
        "errors.UserError = Exception\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
