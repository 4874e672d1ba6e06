"""Per-example terms of the ELBO and the standard test-set diagnostics, from traces.

For any program pair with latent sites :math:`z` (the guide's sample sites) and observed
sites :math:`x`:

.. math::

    \\mathrm{ELBO}(x) = \\underbrace{\\mathbb{E}_{q}[\\log p(x|z)]}_{-\\text{distortion}}
        - \\underbrace{\\mathbb{E}_q[\\log q(z|x) - \\log p(z)]}_{\\text{rate}}

Every term is read off the traces of the two programs (:mod:`ppl_vae.traces`). The rate
of each latent site is analytic where ``torch.distributions.kl_divergence`` knows the
(guide, model) pair of distributions, per latent dimension where both factorise, and a
one-sample Monte Carlo estimate :math:`\\log q - \\log p` otherwise. Active units follow
Burda et al. (2016): unit :math:`u` is active when :math:`\\mathrm{Var}_x(\\mathbb{E}_q[z_u|x])
> 0.01`.

Every figure is a mean per example, in nats of the *unscaled* model: each site's
log-density without the ``poutine.scale`` a program puts on it (scANVI's ``scale_factor``,
a subsampled plate's ``N / B``). Beside it, ``elbo_scaled`` is the same ELBO in the
program's own units, every term (analytic KLs too) carrying its site's scale: what Pyro's
``Trace_ELBO`` of the program reports per example, and equal to ``elbo`` for a program
that scales nothing. A global latent site (outside the data plate) gives each of the
:math:`N` evaluated examples :math:`1/N` of its terms, as Pyro scales a subsampled plate;
its values are no example's code, so active units and ``kl_per_dim`` cover the local sites
(``kl_per_dim`` is None where it would not add up to the rate). The sites are those of
each batch's trace: they may come and go with the batch. Evaluation is at ``beta = 1``
and runs under its own seed, so the same weights always give the same numbers.

Example::

    >>> from ppl_vae.models.vae import VAE
    >>> from ppl_vae.programs import from_object
    >>> x = torch.rand(50, 64)
    >>> out = evaluate(from_object(VAE(x_dim=64, latent_dim=2), x), x)
    >>> sorted(out)[:4]
    ['active_units', 'distortion', 'distortion_stderr', 'elbo']
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch

from ppl_vae import ranks, traces
from ppl_vae.measure.stats import standard_error_from_moments
from ppl_vae.programs import Programs

ACTIVE_UNIT_THRESHOLD = 0.01


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str | None = None):
    """Run with a fixed torch seed and restore the caller's RNG state afterwards."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def eval_mode(pair: Programs):
    """The pair in ``eval()`` mode (no corruption, no dropout); afterwards each module is
    back in the mode it was in (a module the user set to ``eval()`` stays so)."""
    modes = [(m, m.training) for m in pair.modules()]
    pair.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def frozen(pair: Programs):
    """Every parameter out of autograd, the pair in eval mode, torch on one thread (one
    point at a time: thread hand-offs cost more than they save); all restored."""
    params = list(pair.parameters())
    flags = [p.requires_grad for p in params]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with eval_mode(pair), warnings.catch_warnings():
            # pyro.module inside a program skips parameters that need no gradient, and says so
            warnings.filterwarnings("ignore", message=".*was not registered in the param store")
            for p in params:
                p.requires_grad_(False)
            yield pair
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        torch.set_num_threads(threads)


def batches(x: torch.Tensor, y: torch.Tensor | None, pair: Programs, size: int):
    """The programs' argument tuples for consecutive batches of ``x`` (and ``y``). Programs
    whose labels are optional (``model(xs, ys=None)``) are scored on x alone, their labels
    drawn by the guide: the measure is of log p(x), as at test time in Pyro's SSVAE."""
    for start in range(0, x.shape[0], size):
        yb = y[start : start + size] if y is not None else None
        yield pair.eval_args(x[start : start + size], yb)


@torch.no_grad()
def evaluate(
    pair: Programs,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    batch_size: int = 1000,
    seed: int = 0,
    draws: int = 1,
) -> dict:
    r"""Mean per-example ``elbo``, ``distortion``, ``rate``, ``kl_per_dim``, ``active_units``
    and ``recon_mse`` (squared error summed over pixels) of the pair on ``x``, with the
    standard errors of the first three over the examples (``elbo_stderr``,
    ``distortion_stderr``, ``rate_stderr``: the sample standard deviation of the
    per-example values over :math:`\sqrt n`; None for one example).

    ``draws`` averages each example's ELBO, rate and distortion over that many draws of
    the guide before the mean and standard error are taken (the codes, active units and
    reconstructions are the first draw's), so the standard error is that of the
    per-example figures rather than of one noisy draw of each.

    ``rate``, ``kl_per_dim`` and ``active_units`` are ``None`` for a pair whose model masks
    out its latent prior (the deterministic autoencoders); its ``elbo`` is then the
    reconstruction log-likelihood. ``kl_per_dim`` is ``None`` where some latent site's
    KL does not split per dimension. ``elbo_scaled`` (and ``elbo_scaled_stderr``) is the
    ELBO per example in the program's own units (see the module docstring); the other
    figures are in nats of the unscaled model. Where the guide or the model enumerates sites
    (``config_enumerate``), the ELBO is ``TraceEnum_ELBO``'s with those sites summed out
    (:func:`~ppl_vae.traces.enum_elbo`), and so is the distortion
    :math:`-\mathbb{E}_q \log p(x \mid z)` (the rate is the rest; where the model
    enumerates its own sites the rate is the guide sites' KL and the distortion the rest).
    """
    parts: dict[int, dict[str, torch.Tensor]] = {}  # per batch: sums over its examples
    # Batch k runs under its own seed, so its draws do not depend on the batches before it:
    # sharded over the ranks of a distributed run (batch k on rank k % W), the per-batch
    # sums are those of one process, and they are added up in the same order below.
    n = x.shape[0]
    with eval_mode(pair):
        for k, args in ranks.my_batches(batches(x, y, pair, batch_size)):
            with seeded(ranks.batch_seed(seed, k), x.device):
                parts[k] = _batch_sums(pair, args, n, draws)
    return _figures(pair, ranks.gather(parts, x.device), n)


def _batch_sums(pair: Programs, args: tuple, total: int, draws: int) -> dict:
    """One batch's sums over its examples: of the distortion, the rate and the ELBO in the
    program's units, of the squares of those and of the ELBO (for the standard errors), of
    the KL per local dimension and the squared reconstruction error; and the codes."""
    t, z, recon = traces.measure(pair, args, total=total)
    distortion, rate, scaled, dims = _over_draws(pair, args, total, draws, t)
    if pair.model_enumerated or pair.enumerated:
        distortion, rate, scaled = _summed_out(pair, args, total, draws, distortion, rate)
    elbo = -(distortion + rate)  # ELBO = E_q log p(x|z) - KL(q || p)
    if not pair.scaled:  # no scale of the program's own: the very same figure
        scaled = elbo
    part = {"distortion": distortion.sum(0), "rate": rate.sum(0), "elbo_scaled": scaled.sum(0)}
    for key, value in (("elbo", elbo), ("distortion", distortion), ("rate", rate)):
        part[f"{key}_sq"] = value.pow(2).sum(0)
    part["elbo_scaled_sq"] = scaled.pow(2).sum(0)
    if all(d is not None for d in dims) and not global_kl(t):
        part["kl_per_dim"] = torch.cat(dims, -1).sum(0)
    if z is not None:
        part["codes"] = z
    if pair.x_shaped and recon is not None:  # the observed site scores x (not Pyro's CVAE)
        err = recon - args[0].reshape(recon.shape)
        part["recon_mse"] = err.pow(2).sum(-1).sum(0)
    return part


def _over_draws(pair: Programs, args: tuple, total: int, draws: int, first: dict) -> tuple:
    """Each example's distortion :math:`-\\log p(x|z)`, rate, ELBO in the program's units
    and KL per dimension of each local site (None where it does not split), averaged over
    ``draws`` draws of the guide, of which ``first`` (a trace's terms) is the first."""
    distortion = -first["log_lik"].double()
    rate = _rate(first).double()
    scaled = first["elbo_scaled"].double()
    dims = _kl_dims(pair, first)
    for _ in range(draws - 1):  # more draws of the same examples
        more = traces.terms(pair, args, total=total)
        distortion = distortion - more["log_lik"].double()
        rate = rate + _rate(more).double()
        scaled = scaled + more["elbo_scaled"].double()
        dims = [  # KL per dimension over the same draws as the rate
            None if d is None or e is None else d + e for d, e in zip(dims, _kl_dims(pair, more))
        ]
    dims = [None if d is None else d / draws for d in dims]
    return distortion / draws, rate / draws, scaled / draws, dims


def _kl_dims(pair: Programs, t: dict) -> list:
    """The KL per dimension of each local latent site in a trace's terms (None: no split)."""
    return [t.get(f"kl_dims/{s}") for s in pair.latent_sites]


def _summed_out(
    pair: Programs, args: tuple, total: int, draws: int, distortion, rate
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distortion, rate and ELBO in the program's units with the enumerated sites summed
    out (:func:`_enumerated`): where the model enumerates its own sites the rate is the
    guide sites' KL and the distortion the rest (:math:`-\\mathbb{E}_q \\log p(x|z)`);
    where the guide enumerates, both terms sum its sites out and the rate is the rest."""
    elbo, scaled, summed = _enumerated(pair, args, total, draws)
    if summed is None:  # the model's own sites summed out: -E log p(x|z)
        return -elbo - rate, rate, scaled
    return summed, -elbo - summed, scaled  # the guide's enumerated sites summed out


def _figures(pair: Programs, parts: dict[int, dict], n: int) -> dict:
    """:func:`evaluate`'s figures from the per-batch sums of all ranks: means per example
    and their standard errors (from the sums of squares), in batch order."""
    every = {key for key in ("kl_per_dim", "recon_mse") if all(key in p for p in parts.values())}
    sums: dict[str, torch.Tensor] = {}
    for k in sorted(parts):
        for key, value in parts[k].items():
            if key != "codes" and (key not in ("kl_per_dim", "recon_mse") or key in every):
                sums[key] = sums.get(key, 0) + value
    out = {k: v / n for k, v in sums.items()}
    out["elbo"] = -(out["distortion"] + out["rate"])
    prior = pair.has_prior

    def stderr(key: str) -> float | None:
        return standard_error_from_moments(out[key], out[f"{key}_sq"], n)

    return {
        "elbo": float(out["elbo"]),
        "elbo_stderr": stderr("elbo"),
        "distortion": float(out["distortion"]),
        "distortion_stderr": stderr("distortion"),
        "rate": float(out["rate"]) if prior else None,
        "rate_stderr": stderr("rate") if prior else None,
        "kl_per_dim": out["kl_per_dim"].tolist() if prior and "kl_per_dim" in every else None,
        "active_units": _active_units(pair, parts, n) if prior else None,
        "recon_mse": float(out["recon_mse"]) if "recon_mse" in out else None,
        "elbo_scaled": float(out["elbo_scaled"]),
        "elbo_scaled_stderr": stderr("elbo_scaled"),
    }


def _active_units(pair: Programs, parts: dict[int, dict], n: int) -> int | None:
    """Burda et al.'s active units of the codes of every batch: dimensions :math:`u` with
    :math:`\\mathrm{Var}_x(\\mathbb{E}_q[z_u|x])` over the threshold (None without codes)."""
    codes = [parts[k]["codes"] for k in sorted(parts) if "codes" in parts[k]]
    if len(codes) != len(parts) or not pair.latent_sites:
        return None
    codes = torch.cat(codes)
    variance = codes.var(0) if n > 1 else torch.zeros_like(codes[0])
    return int((variance > ACTIVE_UNIT_THRESHOLD).sum())


def _enumerated(pair: Programs, args: tuple, total: int, draws: int):
    """The ELBO, the ELBO in the program's units and (where the model enumerates nothing
    itself) the distortion per example, with the enumerated sites summed out by
    ``TraceEnum_ELBO``'s machinery (:func:`ppl_vae.traces.enum_elbo`), ``draws`` averaged."""

    x = args[0]
    cuda = [x.device.index or 0] if x.is_cuda else []
    parts = (False,) if pair.model_enumerated else (False, True)
    elbo = scaled = distortion = 0.0
    for _ in range(draws):  # the program's units from the same draws (a forked stream)
        if pair.scaled:
            with torch.random.fork_rng(devices=cuda):
                scaled = scaled + traces.enum_elbo(pair, args, total, scaled=True).double()
        terms = traces.enum_terms(pair, args, total, parts=parts)
        elbo = elbo + terms[0].double()
        if not pair.scaled:
            scaled = scaled + terms[0].double()
        if not pair.model_enumerated:
            distortion = distortion - terms[1].double()
    if pair.model_enumerated:
        return elbo / draws, scaled / draws, None
    return elbo / draws, scaled / draws, distortion / draws


def _rate(t: dict[str, torch.Tensor]) -> torch.Tensor:
    """The KL of every latent site of a trace's terms (global ones carry their share)."""
    return sum(v for k, v in t.items() if k.startswith("kl/"))


def global_kl(t: dict[str, torch.Tensor]) -> bool:
    """Whether some latent site of the terms has no per-dimension split (so the rate
    does not split over the local dimensions)."""
    return any(v is None for k, v in t.items() if k.startswith("kl_dims/"))


#: Each epoch scores as many training examples as the test set holds, at least
#: TRAIN_EVAL_MIN and at most TRAIN_EVAL_LIMIT (all of a smaller training set), so the
#: train and test figures have comparable standard errors and a long run's evaluation
#: does not cost more than its training.
TRAIN_EVAL_MIN, TRAIN_EVAL_LIMIT = 2000, 10000

#: The per-epoch record: the one metric record that the history, ``metrics.json``, the
#: curves, the report, compare and sweep all read. Each key and what it holds (the
#: test set's figure unless named train; the trainer adds ``beta``, ``train_objective``
#: and an objective's own state, e.g. ``capacity``).
EPOCH_RECORD = {
    "epoch": "epochs trained",
    "step": "optimizer steps taken",
    "beta": "the latent scale at the epoch's last step",
    "train_objective": "mean training loss of the epoch (the objective optimised)",
    "train_elbo": "ELBO per example on the training rows scored each epoch",
    "train_rate": "rate on those training rows",
    "train_distortion": "distortion on those training rows",
    "val_elbo": "ELBO per example on the validation rows (None without early stopping)",
    "test_elbo": "ELBO per example on the test set, at beta = 1, each example's averaged "
    "over test_draws draws of the guide",
    "test_draws": "draws of the guide averaged per test example (EPOCH_DRAWS; the final "
    "figures of metrics.json: TEST_DRAWS)",
    "test_elbo_stderr": "standard error of test_elbo over the test examples",
    "test_elbo_scaled": "test_elbo in the program's own units: every term carrying its "
    "site's poutine.scale (test_elbo and the other figures are nats per example of the "
    "unscaled model; the two agree for a program that scales nothing)",
    "test_elbo_scaled_stderr": "standard error of test_elbo_scaled over the test examples",
    "rate": "KL(q(z|x) || p(z)) per example (the log prior density where no KL applies)",
    "rate_stderr": "standard error of rate over the test examples",
    "distortion": "-log p(x|z) per example",
    "distortion_stderr": "standard error of distortion over the test examples",
    "kl_per_dim": "rate per latent dimension",
    "active_units": "latent dimensions whose posterior mean varies over x",
    "test_recon_mse": "squared reconstruction error per example, summed over pixels",
    "grad_norm": "(with grad_tolerance) the norm of the full-batch gradient at the "
    "epoch's end, as a fraction of its norm before the first step",
    "stopped": "why training stopped after this epoch (a StopReason), None while it went on",
    "best_epoch": "the epoch whose weights the run keeps (the best on validation with "
    "early stopping, else the last)",
}
#: Draws of the guide averaged per test example in the figures a run reports
#: (``metrics.json``, ``evaluate``: TEST_DRAWS) and in each epoch record (EPOCH_DRAWS): a
#: curve needs one draw (its standard error says how noisy it is); the reported figures get
#: four, for a smaller error, without paying four evaluations every epoch.
TEST_DRAWS, EPOCH_DRAWS = 4, 1
#: The figures of ``metrics.json`` read from the last epoch record under the same names.
FINAL_METRICS = (
    "train_elbo",
    "test_elbo",
    "test_elbo_stderr",
    "test_elbo_scaled",
    "test_elbo_scaled_stderr",
    "test_draws",
    "test_recon_mse",
    "rate",
    "rate_stderr",
    "distortion",
    "distortion_stderr",
    "kl_per_dim",
    "active_units",
    "stopped",
    "best_epoch",
)


def train_eval_size(data) -> int:
    """How many training examples (the first ones) each epoch record scores."""
    wanted = max(data.x_test.shape[0], TRAIN_EVAL_MIN)
    return min(data.x_train.shape[0], wanted, TRAIN_EVAL_LIMIT)


def evaluate_test_set(pair: Programs, data, config, draws: int = TEST_DRAWS) -> dict:
    """The test set's part of :data:`EPOCH_RECORD` (``draws`` draws per example), under
    ``config``'s seed and evaluation batch size."""
    size, seed = config.eval_batch_size, config.seed
    test = evaluate(pair, data.x_test, data.y_test, size, seed=seed, draws=draws)
    return {
        "test_elbo": test["elbo"],
        "test_elbo_stderr": test["elbo_stderr"],
        "test_elbo_scaled": test["elbo_scaled"],
        "test_elbo_scaled_stderr": test["elbo_scaled_stderr"],
        "test_draws": draws,
        "rate": test["rate"],
        "rate_stderr": test["rate_stderr"],
        "distortion": test["distortion"],
        "distortion_stderr": test["distortion_stderr"],
        "kl_per_dim": test["kl_per_dim"],
        "active_units": test["active_units"],
        "test_recon_mse": test["recon_mse"],
    }


def epoch_record(
    pair: Programs,
    data,
    config,
    epoch: int,
    step: int,
    validation: tuple | None = None,
    draws: int = EPOCH_DRAWS,
) -> dict:
    """:data:`EPOCH_RECORD` of the pair at beta = 1: the test set (:func:`evaluate_test_set`,
    ``draws`` draws per example), the first :func:`train_eval_size` examples of the
    training set and, given ``validation`` = ``(x_val, y_val)``, the validation rows
    (``config`` gives the seed and the evaluation batch size); ``beta``,
    ``train_objective``, ``stopped`` and ``best_epoch`` are the trainer's."""
    size, seed = config.eval_batch_size, config.seed
    test = evaluate_test_set(pair, data, config, draws)
    val = evaluate(pair, *validation, size, seed=seed)["elbo"] if validation else None
    n = train_eval_size(data)
    y_train = data.y_train[:n] if data.y_train is not None else None
    scored = data.scored_train(n)  # a binary draw under dynamic binarisation, as the test set
    train = evaluate(pair, scored, y_train, size, seed)
    return {
        "epoch": epoch,
        "step": step,
        "beta": 1.0,
        "train_objective": math.nan,
        "train_elbo": train["elbo"],
        "train_rate": train["rate"],
        "train_distortion": train["distortion"],
        "val_elbo": val,
        **test,
        "stopped": None,
        "best_epoch": epoch,
    }
