"""``--elbo auto`` (the default): the closed-form KL exactly where it is valid, the sampled
estimator where it is not, said per site in ``metrics.json`` (``elbo``, ``kl``), and the
measurements using the same per-site treatment with the site's scale."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from ppl_vae.models.vae import VAE
from pyro import poutine
from torch import nn

from ppl_vae import traces
from ppl_vae.errors import UserError
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.elbo import choose
from ppl_vae.infer.trainer import fit
from ppl_vae.programs import Programs, from_object


class TwoLevel(nn.Module):
    """Model z1 -> z2 -> x; the guide samples z1 then z2 (``in_order``, mean-field) or z2
    then z1, conditioning z1 on z2 (then the closed-form KL of z2 against p(z2 | z1), with
    z1 drawn after z2 and depending on it, is not the expected log-ratio)."""

    def __init__(self, x_dim: int = 64, in_order: bool = True):
        super().__init__()
        self.in_order = in_order
        self.dec = nn.Linear(2, x_dim)
        self.enc1, self.enc2 = nn.Linear(x_dim + 2, 4), nn.Linear(x_dim + 2, 4)

    def model(self, x):
        pyro.module("dec", self.dec)
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            z2 = pyro.sample("z2", dist.Normal(z1, 0.5).to_event(1))
            likelihood = dist.Bernoulli(logits=self.dec(z2), validate_args=False)
            pyro.sample("x", likelihood.to_event(1), obs=x)

    def _q(self, net, x, other):
        loc, log_scale = net(torch.cat([x, other], -1)).chunk(2, -1)
        return dist.Normal(loc, log_scale.exp()).to_event(1)

    def guide(self, x):
        pyro.module("enc1", self.enc1)
        pyro.module("enc2", self.enc2)
        zero = x.new_zeros(x.shape[0], 2)
        with pyro.plate("data", x.shape[0]):
            if self.in_order:
                z1 = pyro.sample("z1", self._q(self.enc1, x, zero))
                pyro.sample("z2", self._q(self.enc2, x, z1))
            else:
                z2 = pyro.sample("z2", self._q(self.enc2, x, zero))
                pyro.sample("z1", self._q(self.enc1, x, z2))


@pytest.mark.parametrize("in_order", [True, False])
def test_auto_resolves_from_the_order_of_the_latent_sites(digits, in_order):
    x = digits.x_test[:20].bernoulli(generator=torch.Generator().manual_seed(0))
    pair = Programs(*(lambda m: (m.model, m.guide))(TwoLevel(in_order=in_order)), x)
    choice = choose(pair, TrainConfig())
    if in_order:
        assert pair.mean_field and pair.analytic_kl_sites == ("z1", "z2")
        assert choice.elbo == "meanfield" and choice.kl == {"z1": "analytic", "z2": "analytic"}
    else:
        assert not pair.mean_field and pair.analytic_kl_sites == ()
        assert choice.elbo == "trace" and choice.kl == {"z2": "sampled", "z1": "sampled"}
        assert "not mean-field" in choice.reason
        with pytest.raises(UserError, match="--elbo meanfield would compute a wrong KL"):
            choose(pair, TrainConfig(elbo="meanfield"))
    # The measurements treat each site as the objective does: the draw's log-ratio where
    # the closed form is not valid.
    pyro.set_rng_seed(0)
    model_tr, guide_tr = traces.trace_pair(pair, (x,))
    t = traces.terms_of(pair, model_tr, guide_tr, (x,))
    for name in pair.latent_sites:
        ratio = traces.per_example(guide_tr.nodes[name], 20) - traces.per_example(
            model_tr.nodes[name], 20
        )
        assert torch.allclose(t[f"kl/{name}"], ratio) != in_order
    # The trainer uses that choice; the wrong-order pair trains with the sampled estimator.
    module = TwoLevel(in_order=in_order)
    result = fit(module.model, module.guide, digits, TrainConfig(epochs=1, progress=False))
    assert result.choice.elbo == ("meanfield" if in_order else "trace")


def test_sites_without_a_closed_form_keep_the_sampled_estimator(digits):
    """A Delta guide (the autoencoders) and a flow guide have no closed-form KL: auto is
    the trace estimator for them, and enum stays enum where a model asks for it."""
    from ppl_vae import registry

    x = digits.x_test[:8]
    for name, expect in (("ae", "trace"), ("iaf-vae", "trace"), ("vae", "meanfield")):
        model, guide = registry.instantiate(registry.resolve(name), x_dim=64, image_shape=None)
        assert choose(Programs(model, guide, x), TrainConfig()).elbo == expect, name


def test_an_analytic_kl_carries_its_sites_scale(digits):
    """A program scaled as a whole (a subsample scale does this) scales its closed-form
    KL in the program's units (``elbo_scaled``) as its sampled log-ratio is scaled; the
    terms in nats of the unscaled model are the unscaled program's."""
    x = digits.x_test[:10]
    vae = VAE(64, latent_dim=3, hidden=(16,))
    plain = from_object(vae, x)
    scaled = Programs(poutine.scale(vae.model, 3.0), poutine.scale(vae.guide, 3.0), x)
    assert scaled.analytic_kl_sites == ("z",)
    with torch.no_grad():
        torch.manual_seed(0)
        a = traces.terms(plain, (x,))
        torch.manual_seed(0)  # the same draws
        b = traces.terms(scaled, (x,))
    assert torch.allclose(b["kl/z"], a["kl/z"]) and torch.allclose(b["kl_dims/z"], a["kl_dims/z"])
    assert torch.allclose(b["elbo_scaled"], 3.0 * a["elbo_scaled"])
    # a scale on one program only: the closed form is not valid, the draw's ratio is used
    lopsided = Programs(poutine.scale(vae.model, 3.0), vae.guide, x)
    assert lopsided.analytic_kl_sites == ()
    assert choose(lopsided, TrainConfig()).elbo == "trace"
