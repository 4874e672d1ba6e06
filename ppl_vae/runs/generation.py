"""Generation quality of a trained run: the Fréchet distance and precision/recall of its
samples against a data split (:mod:`ppl_vae.measure.generation`), in the feature space of
the data set's classifier (:mod:`ppl_vae.runs.features`), for ``evaluate --generation``
and ``compare --generation``.

The samples are the model's generation, :func:`ppl_vae.traces.generate` (the decoder mean
at :math:`z \\sim p(z)`), as many as the split has rows. A program whose prior term is
masked (``ae``, ``pca``) still states its p(z); its samples decode draws of it, which is
what pythae's ``NormalSampler`` does for an AE, and the record says the ELBO does not score
it (``prior_scored``: the codes follow it only where the objective makes them, as WAE's
MMD does). The real set is the split of the data set as its source gives it, without the
run's binarisation: a decoder mean is the pixel probability whose Bernoulli draws a
binarised run was trained on, and one classifier serves every run of a data set.
``fd_floor`` is the distance between the real split and as many rows of the other split:
what two samples of the data themselves score (the smallest FD a model can expect).
Data without class labels, or a model that does not generate x, gets one
``generation_note`` and no numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ppl_vae import data, traces
from ppl_vae.errors import UserError, first_line
from ppl_vae.measure import features as feats
from ppl_vae.measure import generation as gen
from ppl_vae.programs import Programs
from ppl_vae.runs.config import RunConfig
from ppl_vae.runs.features import feature_network

#: The keys a generation record adds (each estimate's ``_stderr`` beside it).
KEYS = ("fd", "fd_stderr", "precision", "precision_stderr", "recall", "recall_stderr")


@dataclass
class Reference:
    """The real side, computed once per data set: the classifier, its record, the features
    of the real split and of the other split (for the floor), and the floor itself."""

    net: feats.FeatureNet
    classifier: dict[str, Any]
    real: torch.Tensor
    floor: tuple[float, float]
    split: str


def reference(cfg: RunConfig, split: str = "test") -> Reference | str:
    """The :class:`Reference` of a run's data set (as its source gives it, without the
    run's binarisation), or a note saying why there is none."""
    ds = data.load(
        cfg.data, cfg.data_root, False, "none", cfg.train.seed, image_shape=cfg.image_shape
    )
    return reference_of(ds, split)


def reference_of(ds: data.Dataset, split: str = "test") -> Reference | str:
    """The :class:`Reference` of a labelled data set: its classifier (cached), the features
    of its ``split`` and the floor against the other split; a note when it has no labels."""
    y_train, y_test = feats.class_labels(ds.labels_train), feats.class_labels(ds.labels_test)
    if y_train is None or y_test is None:
        return (
            f"no generation quality: {ds.name} has no class labels (y_train and y_test as "
            "class ids) to train the feature classifier on"
        )
    net, record = feature_network(ds.name, ds.x_train, y_train, ds.x_test, y_test)
    real_x, other_x = (ds.x_test, ds.x_train) if split == "test" else (ds.x_train, ds.x_test)
    real, other = feats.features(net, real_x), feats.features(net, other_x)
    n = min(real.shape[0], other.shape[0])
    pick = torch.randperm(other.shape[0], generator=torch.Generator().manual_seed(0))[:n]
    floor = gen.fd_with_se(real[:n], other[pick])
    return Reference(net, record, real, floor, split)


def quality(pair: Programs, ds: data.Dataset, seed: int = 0) -> dict[str, Any]:
    """The generation record of a trained pair (``fit(...).pair``) against the test split
    of ``ds``, from Python::

        result = fit(vae.model, vae.guide, ds, TrainConfig(epochs=5))
        quality(result.pair, ds)["fd"]
    """
    was = pair.training
    pair.eval()
    try:
        return generation_record(pair, reference_of(ds), ds.x_test, ds.y_test, seed)
    finally:
        pair.train(was)


def samples(pair: Programs, x_like: torch.Tensor, y_like: Any, n: int, seed: int) -> torch.Tensor:
    """``n`` draws of the model's generation, 1000 at a time, the batches shaped (and
    labelled) like rows of ``x_like``/``y_like``; the global random state is untouched."""
    out = []
    with torch.random.fork_rng(devices=[x_like.device] if x_like.is_cuda else []):
        torch.manual_seed(seed)
        for start in range(0, n, 1000):
            idx = torch.arange(start, min(n, start + 1000), device=x_like.device)
            idx = idx % x_like.shape[0]
            y = None if y_like is None or pair.labels_optional else y_like[idx]
            like = pair.args(x_like[idx], y) if pair.takes_labels else (x_like[idx],)
            out.append(traces.generate(pair, like).reshape(len(idx), -1).cpu())
    return torch.cat(out)


def generation_record(
    pair: Programs,
    ref: Reference | str,
    x_like: torch.Tensor,
    y_like: Any = None,
    seed: int = 0,
) -> dict[str, Any]:
    """``fd``, ``precision`` and ``recall`` with their ``_stderr`` and a ``generation``
    record (how they were computed, the floor, the classifier), or every key None and a
    ``generation_note`` saying why."""
    empty: dict[str, Any] = dict.fromkeys(KEYS)
    if isinstance(ref, str):
        return {**empty, "generation_note": ref}
    if not pair.x_shaped:
        note = f"no generation quality: the model scores {', '.join(pair.observed_sites)}, not x"
        return {**empty, "generation_note": note}
    n = ref.real.shape[0]
    try:
        fake_x = samples(pair, x_like, y_like, n, seed)
    except (UserError, NotImplementedError, ValueError, RuntimeError) as exc:
        note = f"no generation quality: cannot sample ({first_line(exc)})"
        return {**empty, "generation_note": note}
    if fake_x.shape[1] != ref.net.x_dim or not bool(torch.isfinite(fake_x).all()):
        note = "no generation quality: the samples are not finite rows shaped like x"
        return {**empty, "generation_note": note}
    out: dict[str, Any] = gen.generation_quality(
        ref.real, feats.features(ref.net, fake_x), seed=seed
    )
    keep = ("data", "fingerprint", "code_version", "test_accuracy", "cache", "path")
    out["generation"] = {
        "samples": n,
        "real": f"the {ref.split} split without binarisation",
        "k": gen.K_NEAREST,
        "standard_error": f"split-half, {gen.SPLITS} random halvings",
        "fd_floor": ref.floor[0],
        "fd_floor_stderr": ref.floor[1],
        "prior_scored": bool(pair.has_prior),
        "classifier": {k: ref.classifier.get(k) for k in keep},
    }
    if not pair.has_prior:
        out["generation_note"] = (
            "no log p(z) in the ELBO (the prior site is masked): samples decode draws "
            "of the program's p(z), which the codes follow only where the objective pulls "
            "them there (--objective wae)"
        )
    return out
