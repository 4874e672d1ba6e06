"""ppl-vae: generative autoencoders written as Pyro programs.

Every model is a pair of Pyro programs, ``model`` (p(z) and p(x|z)) and ``guide``
(q(z|x)), fitted by one SVI trainer on the ELBO. Deterministic autoencoders are
the same programs with a point-mass guide.

Example::

    from ppl_vae import data, train
    from models.vae import VAE

    ds = data.load("digits")
    vae = VAE(x_dim=ds.x_dim, latent_dim=2)
    result = train.fit(vae, ds, train.TrainConfig(epochs=5, progress=False))
    print(result.history[-1]["test_elbo"])
"""

import pyro

# PyroModule parameters live on the module, not in Pyro's global param store, so
# two modules trained one after the other never share (or silently reuse) tensors.
pyro.settings.set(module_local_params=True)

__version__ = "0.1.0"
