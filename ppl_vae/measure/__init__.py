"""Measurements of a trained pair, all from the traces of its two programs.

``metrics.py`` holds the one metric record (:data:`~ppl_vae.measure.metrics.EPOCH_RECORD`:
the per-epoch record that the history, ``metrics.json``, the curves, the report, compare
and sweep read) and :func:`~ppl_vae.measure.metrics.evaluate` (ELBO, rate, distortion, KL
per dimension, active units over a data set); ``importance.py`` the importance-weighted
log p(x); ``ais.py`` annealed importance sampling of log p(x) and its BDMC upper bound;
``calibration.py`` simulation-based calibration of the guide; ``amortization.py`` the
approximation and amortisation gaps; ``failure_modes.py`` the lecture notes' two failure
modes; ``disentanglement.py`` MIG, the beta-VAE and FactorVAE scores and DCI on data with
known factors; ``generation.py`` the Fréchet distance and precision/recall of samples
in the features of ``features.py``'s classifier; ``likelihood.py`` the record of
``ppl-vae evaluate`` (ELBO, IW and AIS log p(x), what they are of); ``stats.py`` the one
standard error. A new measurement is a function of ``(pair, x, y)`` here that works for
any program pair; it imports nothing of ``infer/`` (the trainer scores each epoch with this
package: it sits below it), and shards its batches over the ranks of a distributed run
with :mod:`ppl_vae.ranks`.
"""
