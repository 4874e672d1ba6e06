"""ppl-vae: generative autoencoders written as Pyro programs.

Every model is a pair of Pyro programs, ``model`` (p(z) and p(x|z)) and ``guide``
(q(z|x)), fitted by one SVI trainer on the ELBO. Deterministic autoencoders are
the same programs with a point-mass guide.

The package is grouped by concept (see the README's "Layout"): ``infer`` (objectives and
the trainer), ``measure``, ``analysis``, ``data``, ``runs`` (the run directory and the
jobs), ``figures`` and ``cli``; the suite is ``ppl_vae.models``.

Example::

    from ppl_vae import data
    from ppl_vae.infer import TrainConfig, fit
    from ppl_vae.models.vae import VAE

    ds = data.load("digits")
    vae = VAE(x_dim=ds.x_dim, latent_dim=2)
    result = fit(vae.model, vae.guide, ds, TrainConfig(epochs=5, progress=False))
    print(result.history[-1]["test_elbo"])
"""

# Importing ppl_vae changes nothing global: no Pyro setting, no matplotlib backend, no
# random state. Runs in one process are isolated by giving each program pair its own
# param-store state (ppl_vae.programs.Programs.scope).

__version__ = "0.1.0"
