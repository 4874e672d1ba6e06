"""The suite's building blocks (installed as ``ppl_vae.models.blocks``), for your programs too.

``nets.py`` (MLPs, convolutional encoders and decoders, Gaussian heads), ``likelihoods.py``
(Bernoulli, Gaussian, continuous Bernoulli p(x|z) by name), ``autoencoder.py`` (the
shared prior/likelihood/posterior base class of the suite's VAEs: a convenience, nothing
downstream requires it) and ``point_mass.py`` (the Delta guide the deterministic
autoencoders share), ``flows.py`` (Pyro's conditional planar and radial flows with their
inverses). The registry lists only the model files beside this folder.
"""
