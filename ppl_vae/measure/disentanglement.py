"""Disentanglement metrics: MIG, the beta-VAE score, the FactorVAE score and DCI.

Every metric reads a representation ``represent(x) -> z`` (flattened images ``(n, D)``
to codes ``(n, L)``, e.g. the guide's posterior means) and a
:class:`ppl_vae.data.dsprites.FactorData` (discrete factors :math:`v_1..v_K` that it can
sample and render). Each is defined as in its paper and estimated as
disentanglement_lib (Locatello et al. 2019) estimates it, and by default with the sample
sizes, batch sizes and classifiers of that library's study
(``unsupervised_study_v1/metric_configs/*.gin``; :data:`REFERENCE`), so the scores are
comparable with published ones. :data:`FAST` (``ppl-vae disentangle --fast``; its sizes in
brackets below) takes 3 to 17 times fewer points and uses a random forest for DCI: all four run
in seconds on a small model, at the price of more sampling noise and a DCI that is not the
literature's. Everything is deterministic given ``seed`` (one ``numpy.random.default_rng(seed)`` per
metric, ``random_state=seed`` for sklearn), provided ``represent`` is deterministic.

MIG (Chen et al. 2018, "Isolating sources of disentanglement in VAEs")
    :math:`\\frac1K \\sum_k \\frac{I(z_{j^{(k)}}; v_k) - \\max_{j \\ne j^{(k)}} I(z_j; v_k)}
    {H(v_k)}`, with :math:`j^{(k)} = \\arg\\max_j I(z_j; v_k)`. Mutual information between
    each code dimension, discretised into ``num_bins`` = 20 equal-width histogram bins, and
    each factor's classes (``sklearn.metrics.mutual_info_score``), on ``num_points`` = 10000
    [3000] uniformly drawn combinations. 1 when each factor is captured by one dimension
    alone; 0 when no dimension knows more about a factor than the next best.
beta-VAE score (Higgins et al. 2017, "beta-VAE", Sec. 3)
    A training point: draw a factor :math:`k` uniformly, ``batch_size`` = 64 [32] pairs of
    combinations that share :math:`v_k` (and nothing else on purpose), and take the mean
    absolute difference of their codes, :math:`\\frac1B\\sum_b |z^{(1)}_b - z^{(2)}_b|`.
    A linear classifier (``LogisticRegression``, sklearn defaults but ``max_iter=1000``,
    on standardised features so that codes of any scale converge) predicts :math:`k` from
    it; the score is its accuracy on ``num_eval`` = 5000 [300] fresh points after training
    on ``num_train`` = 10000 [600]. Chance is :math:`1/K`.
FactorVAE score (Kim & Mnih 2018, "Disentangling by factorising", Sec. 4)
    Each code dimension is divided by its standard deviation over ``num_variance`` = 10000
    [3000] draws; dimensions with standard deviation below ``prune_threshold`` = 0.05
    are dropped. A point: fix a random factor :math:`k` at a random value, draw
    ``batch_size`` = 64 [64] combinations, and take the dimension with the least
    normalised variance. The classifier is a majority vote (each dimension predicts the
    factor it was most often the argmin for on ``num_train`` = 10000 [600] points); the
    score is its accuracy on ``num_eval`` = 5000 [300] points. Chance is about
    :math:`1/K`. (Unlike disentanglement_lib, the argmin is mapped back to the
    dimension's own index when some dimensions are pruned.)
DCI (Eastwood & Williams 2018, "A framework for the quantitative evaluation of
disentangled representations")
    One classifier per factor predicts its class from the code; its feature importances
    form :math:`R_{jk}` (dimension :math:`j`, factor :math:`k`). With
    :math:`P_{jk} = R_{jk} / \\sum_{k'} R_{jk'}` and :math:`\\rho_j = \\sum_k R_{jk} /
    \\sum R`, disentanglement is :math:`\\sum_j \\rho_j (1 - H_K(P_{j\\cdot}))`
    (entropy in base :math:`K`), completeness the same with the roles of dimensions and
    factors exchanged (base :math:`L`), and informativeness the classifiers' mean accuracy
    (disentanglement_lib's choice; the paper reports prediction error). ``num_train`` =
    10000 [1500], ``num_test`` = 5000 [500]. The default ``classifier="gbt"`` is
    disentanglement_lib's ``GradientBoostingClassifier()`` (100 trees of depth 3 per class:
    minutes on dSprites' 113 classes); ``"forest"`` [the fast choice] is a bagged forest of
    30 fully grown trees that consider every dimension at each split
    (``RandomForestClassifier(max_features=None)``), which keeps the importances of
    dimensions unrelated to a factor near 0 and runs in about a second.

Each latent's best factor (:func:`latent_factors`) is the factor of largest normalised
mutual information :math:`I(z_j; v_k) / H(v_k)`, the quantity MIG ranks; it labels
latent traversals.

Example: a code that copies the factors is disentangled by every measure::

    >>> import numpy as np
    >>> from ppl_vae.data.dsprites import FactorData
    >>> vals = tuple(np.arange(s, dtype=float) for s in (3, 4, 5))
    >>> fd = FactorData("toy", ("a", "b", "c"), vals, (1, 3), lambda c: torch.tensor(c * 1.0))
    >>> scores = evaluate_all(lambda x: x, fd, seed=0, fast=True)
    >>> [round(scores[k], 2) for k in ("mig", "beta_vae", "factor_vae", "dci_disentanglement")]
    [1.0, 1.0, 1.0, 1.0]
    >>> [d["factor"] for d in scores["latents"]]
    ['a', 'b', 'c']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.stats import entropy
from sklearn.metrics import mutual_info_score

from ppl_vae.data.dsprites import FactorData
from ppl_vae.errors import UserError

Represent = Callable[[torch.Tensor], torch.Tensor]


CLASSIFIERS = ("forest", "gbt")


#: disentanglement_lib's study settings (``beta_vae_sklearn.gin``, ``factor_vae_metric.gin``,
#: ``mig.gin``, ``dci.gin`` of ``unsupervised_study_v1``); the functions' defaults.
REFERENCE: dict[str, dict[str, Any]] = {
    "mig": {"num_points": 10000, "num_bins": 20},
    "beta_vae": {"num_train": 10000, "num_eval": 5000, "batch_size": 64},
    "factor_vae": {
        "num_variance": 10000,
        "num_train": 10000,
        "num_eval": 5000,
        "batch_size": 64,
        "prune_threshold": 0.05,
    },
    "dci": {"num_train": 10000, "num_test": 5000, "classifier": "gbt"},
}


#: ``--fast``: the same estimators on fewer points and a random forest for DCI (seconds,
#: not comparable with published DCI scores).
FAST: dict[str, dict[str, Any]] = {
    "mig": {"num_points": 3000, "num_bins": 20},
    "beta_vae": {"num_train": 600, "num_eval": 300, "batch_size": 32},
    "factor_vae": {
        "num_variance": 3000,
        "num_train": 600,
        "num_eval": 300,
        "batch_size": 64,
        "prune_threshold": 0.05,
    },
    "dci": {"num_train": 1500, "num_test": 500, "classifier": "forest"},
}


def settings(
    sizes: dict[str, dict[str, Any]] | None = None, fast: bool = False
) -> tuple[dict[str, dict[str, Any]], bool]:
    """The estimator settings of every metric -- :data:`FAST` or :data:`REFERENCE`, with
    ``sizes`` overriding single entries -- and whether they are the reference's.

    >>> settings()[1], settings(fast=True)[1], settings({"dci": {"classifier": "forest"}})[1]
    (True, False, False)
    >>> settings({"mig": {"num_points": 10000}})[1]  # the reference's own value
    True
    """
    sizes = dict(sizes or {})
    unknown = set(sizes) - set(REFERENCE)
    if unknown:
        raise UserError(
            f"unknown metric(s) {', '.join(sorted(unknown))}; use mig, beta_vae, factor_vae, dci"
        )
    base = FAST if fast else REFERENCE
    for metric, given in sizes.items():
        bad = set(given) - set(base[metric])
        if bad:
            raise UserError(
                f"unknown setting(s) {', '.join(sorted(bad))} of {metric}; "
                f"use {', '.join(base[metric])}"
            )
    chosen = {metric: {**base[metric], **sizes.get(metric, {})} for metric in base}
    return chosen, chosen == REFERENCE


def encode(
    represent: Represent, factors: FactorData, classes: np.ndarray, batch_size: int = 1024
) -> np.ndarray:
    """Codes ``(n, L)`` float64 of the images of ``classes``, rendered and encoded in batches."""
    out = []
    with torch.no_grad():
        for i in range(0, len(classes), batch_size):
            z = represent(factors.images(classes[i : i + batch_size]))
            if not isinstance(z, torch.Tensor) or z.ndim != 2:
                raise UserError(
                    "represent(x) must return a (batch, latent_dim) tensor of codes; got "
                    f"{getattr(z, 'shape', type(z))}"
                )
            out.append(z.detach().cpu().double().numpy())
    codes = np.concatenate(out)
    if not np.isfinite(codes).all():
        raise UserError("represent(x) returned NaN or infinite codes; check the trained model")
    return codes


def discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Each column binned into ``num_bins`` equal-width bins over its range (0-based)."""
    out = np.zeros(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], num_bins)[1]
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def mutual_information(codes: np.ndarray, classes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """:math:`I(z_j; v_k)` in nats, ``(L, K)``, from binned codes and factor classes."""
    binned = discretize(codes, num_bins)
    return np.array(
        [
            [mutual_info_score(classes[:, k], binned[:, j]) for k in range(classes.shape[1])]
            for j in range(codes.shape[1])
        ]
    )


def factor_entropy(classes: np.ndarray) -> np.ndarray:
    """:math:`H(v_k)` in nats of each factor's empirical class distribution."""
    return np.array([mutual_info_score(c, c) for c in classes.T])


def mig_from_codes(codes: np.ndarray, classes: np.ndarray, num_bins: int = 20) -> dict[str, Any]:
    """MIG of given codes ``(n, L)`` and factor classes ``(n, K)`` (see the module docstring)."""
    mi = mutual_information(codes, classes, num_bins)
    h = factor_entropy(classes)
    varying = h > 0
    top = np.sort(mi, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros_like(top[0])
    gaps = (top[0] - second)[varying] / h[varying]
    return {
        "mig": float(np.mean(gaps)),
        "mig_per_factor": gaps.tolist(),
        "mutual_info": mi.tolist(),
        "factor_entropy": h.tolist(),
    }


def mig(
    represent: Represent,
    factors: FactorData,
    seed: int = 0,
    num_points: int = 10000,
    num_bins: int = 20,
) -> dict[str, Any]:
    """The mutual information gap on ``num_points`` uniformly drawn combinations."""
    rng = np.random.default_rng(seed)
    classes = factors.sample_factors(num_points, rng)
    return mig_from_codes(encode(represent, factors, classes), classes, num_bins)


def _shared_factor_batches(
    factors: FactorData, num_points: int, batch_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each point a factor ``k`` and ``batch_size`` combinations ``(P, B, K)``."""
    k = rng.integers(0, factors.num_factors, size=num_points)
    classes = factors.sample_factors(num_points * batch_size, rng)
    return k, classes.reshape(num_points, batch_size, factors.num_factors)


def beta_vae_score(
    represent: Represent,
    factors: FactorData,
    seed: int = 0,
    num_train: int = 10000,
    num_eval: int = 5000,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Accuracy of a linear classifier that names the factor two batches share."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)

    def points(n: int) -> tuple[np.ndarray, np.ndarray]:
        k, first = _shared_factor_batches(factors, n, batch_size, rng)
        second = factors.sample_factors(n * batch_size, rng).reshape(first.shape)
        rows = np.arange(n)
        second[rows, :, k] = first[rows, :, k]
        flat = np.concatenate([first, second]).reshape(-1, factors.num_factors)
        z = encode(represent, factors, flat).reshape(2, n, batch_size, -1)
        return np.abs(z[0] - z[1]).mean(axis=1), k

    x_train, y_train = points(num_train)
    x_eval, y_eval = points(num_eval)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    model.fit(x_train, y_train)
    return {
        "beta_vae": float(model.score(x_eval, y_eval)),
        "beta_vae_train": float(model.score(x_train, y_train)),
    }


def factor_vae_score(
    represent: Represent,
    factors: FactorData,
    seed: int = 0,
    num_variance: int = 10000,
    num_train: int = 10000,
    num_eval: int = 5000,
    batch_size: int = 64,
    prune_threshold: float = 0.05,
) -> dict[str, Any]:
    """Accuracy of the majority-vote classifier on the least-varying normalised dimension."""
    rng = np.random.default_rng(seed)
    z_all = encode(represent, factors, factors.sample_factors(num_variance, rng))
    global_var = np.var(z_all, axis=0, ddof=1)
    active = np.flatnonzero(np.sqrt(global_var) >= prune_threshold)
    if len(active) == 0:
        return {"factor_vae": 0.0, "factor_vae_train": 0.0, "active_dims": []}

    def votes(n: int) -> np.ndarray:
        k, classes = _shared_factor_batches(factors, n, batch_size, rng)
        rows = np.arange(n)
        classes[rows, :, k] = classes[rows, 0, k][:, None]
        z = encode(represent, factors, classes.reshape(-1, factors.num_factors))
        local_var = np.var(z.reshape(n, batch_size, -1), axis=1, ddof=1)
        argmin = active[np.argmin(local_var[:, active] / global_var[active], axis=1)]
        table = np.zeros((factors.num_factors, z.shape[1]), dtype=np.int64)
        np.add.at(table, (k, argmin), 1)
        return table

    train, evaluation = votes(num_train), votes(num_eval)
    vote = np.argmax(train, axis=0)  # the factor each dimension predicts
    dims = np.arange(train.shape[1])
    return {
        "factor_vae": float(evaluation[vote, dims].sum() / evaluation.sum()),
        "factor_vae_train": float(train[vote, dims].sum() / train.sum()),
        "active_dims": active.tolist(),
    }


def _classifier(name: str, seed: int):
    if name == "forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=30, max_features=None, random_state=seed)
    if name == "gbt":
        from sklearn.ensemble import GradientBoostingClassifier

        return GradientBoostingClassifier(random_state=seed)
    raise UserError(f"unknown DCI classifier {name!r}; choose one of {', '.join(CLASSIFIERS)}")


def dci_from_importance(importance: np.ndarray) -> dict[str, float]:
    """Disentanglement and completeness of an importance matrix ``(L, K)`` (nonnegative)."""
    r = np.abs(np.asarray(importance, dtype=np.float64))
    n_latents, n_factors = r.shape
    weights = r if r.sum() > 0 else np.ones_like(r)
    per_latent = 1.0 - entropy(r.T + 1e-11, base=n_factors) if n_factors > 1 else np.ones(n_latents)
    per_factor = 1.0 - entropy(r + 1e-11, base=n_latents) if n_latents > 1 else np.ones(n_factors)
    rho_latent = weights.sum(axis=1) / weights.sum()
    rho_factor = weights.sum(axis=0) / weights.sum()
    return {
        "dci_disentanglement": float(np.sum(per_latent * rho_latent)),
        "dci_completeness": float(np.sum(per_factor * rho_factor)),
    }


def dci(
    represent: Represent,
    factors: FactorData,
    seed: int = 0,
    num_train: int = 10000,
    num_test: int = 5000,
    classifier: str = "gbt",
) -> dict[str, Any]:
    """DCI disentanglement, completeness and informativeness (classifier accuracy)."""
    rng = np.random.default_rng(seed)
    c_train = factors.sample_factors(num_train, rng)
    c_test = factors.sample_factors(num_test, rng)
    z_train = encode(represent, factors, c_train)
    z_test = encode(represent, factors, c_test)
    importance = np.zeros((z_train.shape[1], factors.num_factors))
    acc_train, acc_test = [], []
    for k in range(factors.num_factors):
        if len(np.unique(c_train[:, k])) < 2:
            continue  # a constant factor has nothing to predict
        model = _classifier(classifier, seed).fit(z_train, c_train[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        acc_train.append(model.score(z_train, c_train[:, k]))
        acc_test.append(model.score(z_test, c_test[:, k]))
    return {
        **dci_from_importance(importance),
        "dci_informativeness_train": float(np.mean(acc_train)),
        "dci_informativeness_test": float(np.mean(acc_test)),
        "dci_importance": importance.tolist(),
    }


def latent_factors(
    mutual_info: np.ndarray, entropies: np.ndarray, names: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Per latent: the factor of largest :math:`I(z_j; v_k) / H(v_k)` and that value."""
    h = np.asarray(entropies, dtype=np.float64)
    normalised = np.where(h > 0, np.asarray(mutual_info) / np.where(h > 0, h, 1.0), 0.0)
    best = np.argmax(normalised, axis=1)
    return [
        {"latent": j, "factor": names[k], "normalized_mi": float(normalised[j, k])}
        for j, k in enumerate(best)
    ]


def evaluate_all(
    represent: Represent,
    factors: FactorData,
    seed: int = 0,
    sizes: dict[str, dict[str, Any]] | None = None,
    fast: bool = False,
) -> dict[str, Any]:
    """All four metrics and each latent's best factor, as one JSON-ready record.

    The estimator settings are disentanglement_lib's (:data:`REFERENCE`), or :data:`FAST`
    with ``fast``; ``sizes`` overrides single settings per metric, e.g.
    ``{"mig": {"num_points": 3000}, "dci": {"classifier": "forest"}}``; keys are
    ``mig``, ``beta_vae``, ``factor_vae`` and ``dci`` (:func:`settings`). The record holds
    the four scores (``mig``, ``beta_vae``, ``factor_vae``, ``dci_disentanglement``), the
    DCI completeness and informativeness, the train accuracies, the matrices behind them,
    ``latents`` (best factor per latent, with ``active`` from the FactorVAE pruning),
    ``factor_names``, the ``settings`` used (every metric's, and the ``dataset``) and
    ``reference_settings``: whether they are disentanglement_lib's, i.e. whether the
    scores compare with published ones.
    """
    chosen, is_reference = settings(sizes, fast)
    record: dict[str, Any] = {"factor_names": list(factors.factor_names), "seed": seed}
    record.update(mig(represent, factors, seed, **chosen["mig"]))
    record.update(beta_vae_score(represent, factors, seed, **chosen["beta_vae"]))
    record.update(factor_vae_score(represent, factors, seed, **chosen["factor_vae"]))
    record.update(dci(represent, factors, seed, **chosen["dci"]))
    latents = latent_factors(
        np.array(record["mutual_info"]), np.array(record["factor_entropy"]), factors.factor_names
    )
    active = set(record["active_dims"])
    for entry in latents:
        entry["active"] = entry["latent"] in active
    record["latents"] = latents
    record["settings"] = {"dataset": factors.name, **chosen}
    record["reference_settings"] = is_reference
    return record
