"""The adversarial autoencoder (Makhzani et al. 2015): a GAN on the codes replaces the KL.

The VAE's programs, trained by reconstruction plus an adversarial game on the codes
("Adversarial Autoencoders") instead of the KL term.

Generative program and guide (the VAE's, the paper's "Gaussian posterior" variant):

.. math::

    z_n \\sim \\mathcal{N}(0, I), \\quad x_n \\mid z_n \\sim p_\\theta(x_n \\mid z_n);
    \\qquad q_\\phi(z_n \\mid x_n) = \\mathcal{N}\\big(\\mu_\\phi(x_n),
    \\mathrm{diag}\\,\\sigma_\\phi^2(x_n)\\big).

Objective (``--objective aae``, :mod:`ppl_vae.infer.aae`, the default here): a discriminator
:math:`D` learns to tell prior draws from the guide's codes, and the pair minimises

.. math::

    -\\textstyle\\sum_n \\log p_\\theta(x_n \\mid z_n) - \\lambda \\sum_n \\log D(z_n),
    \\qquad z_n \\sim q_\\phi(z_n \\mid x_n),

so that the aggregate posterior :math:`q(z) = \\frac1N\\sum_n q(z|x_n)` matches
:math:`p(z)` as a whole rather than each :math:`q(z|x_n)` (the KL term's pull, which the
adversarial term replaces). The optimum of the game (Goodfellow et al. 2014, Prop. 1):
:math:`q(z) = p(z)` and :math:`D = 1/2` everywhere, where the discriminator's loss is
:math:`\\log 2 = 0.693` (the ``discriminator_loss`` of the epoch records) and the codes'
``generator_loss`` :math:`-\\log D(z)` is :math:`\\log 2` per example. Prior samples then decode
like the data, which is what the AAE is for. The ELBO and IW log p(x) that ``evaluate``
reports are still bounds of this model's log-likelihood, with a guide never trained to
cover the posterior (the same caveat as WAE's): read them beside the reconstruction error.

Example::

    >>> import torch
    >>> aae = AAE(x_dim=64, latent_dim=2, hidden=(32,))
    >>> aae.train_defaults["objective"], aae.generate(3).shape
    ('aae', torch.Size([3, 64]))
"""

from __future__ import annotations

from ppl_vae.models.vae import VAE


class AAE(VAE):
    """The VAE's MLP (or convolutional) encoder and decoder, trained adversarially."""

    train_defaults = {"objective": "aae"}


MODEL = AAE
