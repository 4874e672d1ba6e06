"""Building blocks: conv encoders/decoders give exact shapes, fold particle dimensions,
pass gradients, select like the MLPs, and train as a Pyro program."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from ppl_vae.models.blocks import nets
from torch import nn

from ppl_vae.errors import UserError

SHAPES = [(1, 28, 28), (1, 8, 8), (1, 7, 9), (3, 12, 10)]


@pytest.mark.parametrize("shape", SHAPES)
def test_conv_blocks_map_rows_to_rows_of_exact_shape(shape):
    d = math.prod(shape)
    enc = nets.ConvEncoder(shape, 5, channels=(4, 8), hidden=(16,))
    dec = nets.ConvDecoder(3, shape, channels=(4, 8), hidden=(16,))
    assert enc(torch.rand(6, d)).shape == (6, 5)
    assert dec(torch.randn(6, 3)).shape == (6, d)
    # Inside, each layer halves the sides (rounding down) and the decoder retraces them.
    maps = enc.convs(torch.rand(2, *shape))
    (h, w) = nets.conv_sizes(shape, 2)[-1]
    assert maps.shape == (2, 8, h, w) == (2, 8, shape[1] // 4, shape[2] // 4)
    two = nets.ConvDecoder(3, shape, out_channels=2 * shape[0], channels=(4, 8))
    assert two(torch.randn(6, 3)).shape == (6, 2 * d)


def test_default_conv_sizes_for_mnist_and_digits():
    assert nets.conv_sizes((1, 28, 28), len(nets.CHANNELS)) == [(28, 28), (14, 14), (7, 7)]
    assert nets.conv_sizes((1, 8, 8), len(nets.CHANNELS)) == [(8, 8), (4, 4), (2, 2)]
    with pytest.raises(UserError, match="too small"):
        nets.conv_sizes((1, 3, 3), 2)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8)])
def test_particle_dims_fold_into_the_batch(shape):
    d = math.prod(shape)
    enc = nets.make_gaussian_encoder("conv", d, 2, (16,), shape, channels=(4, 8))
    dec = nets.make_decoder("conv", 2, d, (16,), shape, channels=(4, 8))
    x, z = torch.rand(3, 4, d), torch.randn(3, 4, 2)
    loc, scale = enc(x)
    assert loc.shape == scale.shape == (3, 4, 2) and bool((scale > 0).all())
    # The same as applying the block to each particle's batch on its own.
    assert torch.allclose(loc, torch.stack([enc(x[p])[0] for p in range(3)]), atol=1e-6)
    assert torch.allclose(dec(z), torch.stack([dec(z[p]) for p in range(3)]), atol=1e-6)
    assert dec(z).shape == (3, 4, d)


def test_gradients_reach_every_parameter():
    shape = (1, 8, 8)
    enc = nets.make_gaussian_encoder("conv", 64, 2, (16,), shape, channels=(4, 8))
    dec = nets.make_decoder("conv", 2, 64, (16,), shape, channels=(4, 8))
    x = torch.rand(10, 64)
    loc, scale = enc(x)
    out = dec(loc + scale * torch.randn_like(loc))
    nn.functional.binary_cross_entropy_with_logits(out, x).backward()
    for name, p in [*enc.named_parameters(), *dec.named_parameters()]:
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_mlp_choice_builds_what_the_suite_builds_today():
    torch.manual_seed(0)
    head = nets.GaussianHead(64, (32,), 2)
    dec = nets.mlp([2, 32, 128])
    torch.manual_seed(0)
    head2 = nets.make_gaussian_encoder("mlp", 64, 2, (32,))
    dec2 = nets.make_decoder("mlp", 2, 128, (32,))
    for a, b in ((head, head2), (dec, dec2)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert isinstance(nets.make_encoder("mlp", 64, 2, (32,)), nn.Sequential)
    assert isinstance(nets.make_encoder("conv", 64, 2, (32,), (8, 8)), nets.ConvEncoder)


@pytest.mark.parametrize(
    "net, shape, message",
    [
        ("resnet", (1, 8, 8), "unknown net"),
        ("conv", None, "image shape"),
        ("conv", (1, 7, 7), r"\(1, 7, 7\)"),
    ],
)
def test_bad_choices_are_clear_errors(net, shape, message):
    with pytest.raises(UserError, match=message):
        nets.make_encoder(net, 64, 2, (16,), shape)
    with pytest.raises(UserError, match=message):
        nets.make_decoder(net, 2, 64, (16,), shape)


def test_conv_decoder_refuses_partial_images():
    with pytest.raises(UserError, match="multiple of 64"):
        nets.make_decoder("conv", 2, 100, (), (1, 8, 8))


def test_a_conv_vae_as_a_pyro_program_trains(digits):
    torch.manual_seed(0)
    shape, d = digits.image_shape, digits.x_dim
    enc = nets.make_gaussian_encoder("conv", d, 2, (32,), shape, channels=(8, 16))
    dec = nets.make_decoder("conv", 2, d, (32,), shape, channels=(8, 16))

    def model(x):
        pyro.module("decoder", dec)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", enc)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(*enc(x)).to_event(1))

    x = (digits.x_train[:256] > 0.5).float()
    elbo = pyro.infer.Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)

    def loss() -> float:
        with torch.no_grad():
            return elbo.loss(model, guide, x) / len(x)

    before = loss()
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 3e-3}), pyro.infer.Trace_ELBO())
    for _ in range(60):
        svi.step(x)
    after = loss()
    # A random decoder scores 64 pixels at about log 2 each; training must clearly improve.
    assert before > 40 and after < before - 10, (before, after)
