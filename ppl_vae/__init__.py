"""ppl-vae: generative autoencoders written as Pyro programs.

Every model is a pair of Pyro programs, ``model`` (p(z) and p(x|z)) and ``guide``
(q(z|x)), fitted by one SVI trainer on the ELBO. Deterministic autoencoders are
the same programs with a point-mass guide.

Example::

    from ppl_vae import data
    from ppl_vae.infer import trainer as train
    from ppl_vae.models.vae import VAE

    ds = data.load("digits")
    vae = VAE(x_dim=ds.x_dim, latent_dim=2)
    result = train.fit(vae.model, vae.guide, ds, train.TrainConfig(epochs=5, progress=False))
    print(result.history[-1]["test_elbo"])
"""

# Importing ppl_vae changes nothing global: no Pyro setting, no matplotlib backend, no
# random state. Runs in one process are isolated by giving each program pair its own
# param-store state (ppl_vae.programs.Programs.scope).

__version__ = "0.1.0"
