"""contrib's CEVAE (Louizos et al. 2017), as Pyro provides it.

Copied from Pyro (https://github.com/pyro-ppl/pyro), commit ff6ae1c95
(ff6ae1c9572591791aae8842bcd702fcf0b46fd6), file pyro/contrib/cevae/__init__.py.
Pyro is Copyright Contributors to the Pyro project / Uber Technologies, Inc.,
licensed under the Apache License 2.0 (SPDX-License-Identifier: Apache-2.0).

The model and guide code is Pyro's, unchanged. Nothing is copied:
``pyro.contrib.cevae.CEVAE`` is imported and its
``.model`` / ``.guide`` (PyroModules with forward(x, t=None, y=None, size=None))
are what the engine trains. Added: the ``MODEL`` factory. Pyro's CEVAE.fit whitens
x and uses TraceCausalEffect_ELBO (ELBO plus the guide's t/y log-likelihood); the
engine trains the plain ELBO. Data: make_data.py writes cevae_x.npz (x only) and
cevae_xt.npz (x with the treatment t as y_train/y_test).
Conformance program for ppl-vae (issue 22): not part of the engine.
"""

from pyro.contrib.cevae import CEVAE


def MODEL(x_dim, latent_dim=20, hidden=200, num_layers=3, outcome_dist="bernoulli"):
    """``CEVAE(feature_dim=x_dim, ...)``: an nn.Module whose .model and .guide are the programs."""
    hidden_dim = hidden[0] if isinstance(hidden, (list, tuple)) else hidden
    cevae = CEVAE(
        feature_dim=x_dim,
        outcome_dist=outcome_dist,
        latent_dim=latent_dim,
        hidden_dim=hidden_dim,
        num_layers=num_layers,
    )
    cevae.model.label_form = "float"  # the treatment t is observed as a float (Bernoulli)
    return cevae
