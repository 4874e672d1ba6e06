"""Neural building blocks shared by the suite: MLPs, convolutional encoders and decoders,
and Gaussian heads.

These are plain ``torch.nn`` modules (not Pyro programs): the Pyro programs in
``models/`` hold them and call them, so they can be compiled or swapped freely. Every
block maps flattened rows to flattened rows, ``(..., D_in) -> (..., D_out)``: the suite's
programs work on rows ``(N, C*H*W)``, and extra leading dimensions (particles,
``(P, N, D)``) are folded into the batch and unfolded again.

Convolutional blocks (``net="conv"``) know the image shape ``(C, H, W)`` of the data.
Each encoder layer is a ``Conv2d`` with kernel 4, stride 2 and padding 1, so a side of
length :math:`s` becomes :math:`\\lfloor s/2 \\rfloor`; with the default channels
``(32, 64)`` a 28x28 image becomes 64 maps of 7x7 and an 8x8 image 64 maps of 2x2. The
decoder retraces those sizes with ``ConvTranspose2d`` (kernel 4, stride 2, padding 1),
whose output side is :math:`2s + p` with ``output_padding`` :math:`p \\in \\{0, 1\\}` chosen
so every size, odd ones included, comes back exactly. ``hidden`` gives the widths of the
dense layers between the feature maps and the code, as it gives the MLP's widths.

Example: a convolutional VAE as a user's Pyro program, built from these blocks::

    >>> import pyro, pyro.distributions as dist, torch
    >>> enc = make_gaussian_encoder("conv", 784, 2, hidden=(64,), image_shape=(1, 28, 28))
    >>> dec = make_decoder("conv", 2, 784, hidden=(64,), image_shape=(1, 28, 28))
    >>> def model(x):
    ...     pyro.module("decoder", dec)
    ...     with pyro.plate("data", x.shape[0], dim=-1):
    ...         z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    ...         pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x)
    >>> def guide(x):
    ...     pyro.module("encoder", enc)
    ...     with pyro.plate("data", x.shape[0], dim=-1):
    ...         pyro.sample("z", dist.Normal(*enc(x)).to_event(1))
    >>> x = torch.rand(5, 784).round()
    >>> elbo = pyro.infer.Trace_ELBO().differentiable_loss(model, guide, x)
    >>> elbo.shape, dec(torch.randn(3, 5, 2)).shape       # particles: (P, N, d)
    (torch.Size([]), torch.Size([3, 5, 784]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ppl_vae import validate
from ppl_vae.errors import UserError

NETS = ("mlp", "conv")


CHANNELS = (32, 64)  # conv feature maps per stride-2 layer: 28x28 -> 14x14 -> 7x7


ImageShape = tuple[int, int, int]


def mlp(
    sizes: Sequence[int],
    activation: type[nn.Module] = nn.ReLU,
    final: nn.Module | None = None,
) -> nn.Sequential:
    """``Linear -> activation`` for each hidden layer, a final ``Linear``, then ``final``.

    >>> mlp([64, 32, 2])
    Sequential(
      (0): Linear(in_features=64, out_features=32, bias=True)
      (1): ReLU()
      (2): Linear(in_features=32, out_features=2, bias=True)
    )
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    if final is not None:
        layers.append(final)
    return nn.Sequential(*layers)


class LocScale(nn.Module):
    """Any ``body`` with :math:`2d` outputs as :math:`(\\mu, \\sigma)`, with
    :math:`\\sigma = \\mathrm{softplus}(\\cdot) + \\epsilon` so it stays positive."""

    def __init__(self, body: nn.Module, min_scale: float = 1e-4):
        super().__init__()
        self.body = body
        self.min_scale = min_scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.body(x).chunk(2, dim=-1)
        return loc, F.softplus(raw) + self.min_scale


class GaussianHead(LocScale):
    """An MLP returning :math:`(\\mu_\\phi(x), \\sigma_\\phi(x))` (see :class:`LocScale`)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, min_scale: float = 1e-4):
        super().__init__(mlp([in_dim, *hidden, 2 * out_dim]), min_scale)


def conv_sizes(image_shape: Sequence[int], layers: int) -> list[tuple[int, int]]:
    """``(H, W)`` before and after each of ``layers`` stride-2 convolutions (kernel 4,
    padding 1): each side :math:`s \\mapsto \\lfloor s/2 \\rfloor`.

    >>> conv_sizes((1, 28, 28), 2), conv_sizes((1, 8, 8), 2)
    ([(28, 28), (14, 14), (7, 7)], [(8, 8), (4, 4), (2, 2)])
    """
    _, h, w = image_shape
    sizes = [(int(h), int(w))]
    for _ in range(layers):
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))
    if min(sizes[-1]) < 1:
        raise UserError(
            f"images of {h}x{w} pixels are too small for {layers} stride-2 convolutions; "
            "use fewer conv channels (--set channels=32) or net=mlp"
        )
    return sizes


class ConvEncoder(nn.Module):
    """Rows ``(..., C*H*W)`` to features ``(..., out_features)``: ``Conv2d`` (kernel 4,
    stride 2, padding 1) and ReLU per entry of ``channels``, flattened, then an MLP over
    ``hidden`` to ``out_features``."""

    def __init__(
        self,
        image_shape: Sequence[int],
        out_features: int,
        channels: Sequence[int] = CHANNELS,
        hidden: Sequence[int] = (),
    ):
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        h, w = conv_sizes(self.image_shape, len(channels))[-1]
        layers: list[nn.Module] = []
        for a, b in zip((self.image_shape[0], *channels), channels):
            layers += [nn.Conv2d(a, b, kernel_size=4, stride=2, padding=1), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        self.dense = mlp([channels[-1] * h * w, *hidden, out_features])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        maps = self.convs(x.reshape(-1, *self.image_shape))
        return self.dense(maps.flatten(1)).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """Codes ``(..., d)`` to rows ``(..., out_channels*H*W)``: an MLP over ``hidden`` to the
    encoder's smallest feature maps, then ``ConvTranspose2d`` (kernel 4, stride 2,
    padding 1) per entry of ``channels`` in reverse, ReLU between, none after the last (it
    gives logits or means). ``out_channels`` defaults to the image's ``C``; a likelihood
    with two outputs per pixel (mean and scale) asks for ``2 C``."""

    def __init__(
        self,
        latent_dim: int,
        image_shape: Sequence[int],
        out_channels: int | None = None,
        channels: Sequence[int] = CHANNELS,
        hidden: Sequence[int] = (),
    ):
        super().__init__()
        image_shape = tuple(int(s) for s in image_shape)
        sizes = conv_sizes(image_shape, len(channels))
        maps = tuple(reversed(channels))
        self.start = (maps[0], *sizes[-1])
        self.dense = mlp([latent_dim, *hidden, math.prod(self.start)], final=nn.ReLU())
        outs = (*maps[1:], out_channels or image_shape[0])
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(maps, outs)):
            (h_in, w_in), (h_out, w_out) = sizes[-1 - i], sizes[-2 - i]
            pad = (h_out - 2 * h_in, w_out - 2 * w_in)
            layers.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1, output_padding=pad))
            if i < len(maps) - 1:
                layers.append(nn.ReLU())
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        maps = self.dense(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)
        return self.deconvs(maps).reshape(*lead, -1)


class ConvGaussianHead(LocScale):
    """A :class:`ConvEncoder` returning :math:`(\\mu_\\phi(x), \\sigma_\\phi(x))`."""

    def __init__(
        self,
        image_shape: Sequence[int],
        out_dim: int,
        channels: Sequence[int] = CHANNELS,
        hidden: Sequence[int] = (),
        min_scale: float = 1e-4,
    ):
        super().__init__(ConvEncoder(image_shape, 2 * out_dim, channels, hidden), min_scale)


def check_net(net: str, x_dim: int, image_shape: Sequence[int] | None) -> ImageShape | None:
    """Refuse an unknown ``net``, and ``conv`` without an image shape that fits ``x_dim``;
    return the image shape as ``(C, H, W)`` (``(H, W)`` is read as one channel)."""
    if net not in NETS:
        raise UserError(f"unknown net {net!r}; choose one of {', '.join(NETS)} (--set net=conv)")
    if net == "mlp":
        return None
    if image_shape is None:
        raise UserError(
            "net=conv needs image data with a known image shape (digits, mnist-5k, mnist, "
            "fashion-mnist, kmnist, or an .npz of (N, H, W) images); use net=mlp for this data"
        )
    shape = tuple(int(s) for s in image_shape)
    shape = (1, *shape) if len(shape) == 2 else shape
    if len(shape) != 3 or math.prod(shape) != x_dim:
        raise UserError(
            f"image shape {tuple(image_shape)} does not hold {x_dim} values per example; "
            "give (C, H, W) with C*H*W equal to the data's width"
        )
    return shape


def make_encoder(
    net: str,
    x_dim: int,
    out_dim: int,
    hidden: Sequence[int] = (),
    image_shape: Sequence[int] | None = None,
    channels: Sequence[int] = CHANNELS,
) -> nn.Module:
    """A deterministic encoder ``(..., x_dim) -> (..., out_dim)`` (the code of an autoencoder):
    ``mlp([x_dim, *hidden, out_dim])`` or a :class:`ConvEncoder`."""
    shape = check_net(net, x_dim, image_shape)
    if shape is None:
        return mlp([x_dim, *hidden, out_dim])
    return ConvEncoder(shape, out_dim, channels, hidden)


def make_gaussian_encoder(
    net: str,
    x_dim: int,
    latent_dim: int,
    hidden: Sequence[int] = (),
    image_shape: Sequence[int] | None = None,
    channels: Sequence[int] = CHANNELS,
) -> LocScale:
    """An encoder ``x -> (loc, scale)`` of a Gaussian guide: :class:`GaussianHead` or
    :class:`ConvGaussianHead`."""
    shape = check_net(net, x_dim, image_shape)
    if shape is None:
        return GaussianHead(x_dim, hidden, latent_dim)
    return ConvGaussianHead(shape, latent_dim, channels, hidden)


def make_decoder(
    net: str,
    latent_dim: int,
    out_features: int,
    hidden: Sequence[int] = (),
    image_shape: Sequence[int] | None = None,
    channels: Sequence[int] = CHANNELS,
) -> nn.Module:
    """A decoder ``(..., latent_dim) -> (..., out_features)`` mirroring the encoder:
    ``mlp([latent_dim, *reversed(hidden), out_features])`` or a :class:`ConvDecoder`.
    For ``conv``, ``out_features`` is a whole number of images (``k * C*H*W``: ``k = 2``
    for a likelihood that gives a mean and a scale per pixel)."""
    if net == "conv" and image_shape is not None:
        per_image = math.prod(image_shape)
        if out_features % per_image:
            raise UserError(
                f"a conv decoder gives whole images of {tuple(image_shape)}; "
                f"{out_features} outputs are not a multiple of {per_image}"
            )
        shape = check_net(net, per_image, image_shape)
        return ConvDecoder(
            latent_dim, shape, out_features // per_image * shape[0], channels, hidden
        )
    check_net(net, out_features, image_shape)  # an unknown net, or conv without a shape
    return mlp([latent_dim, *reversed(hidden), out_features])


def parse_hidden(spec: str | int | Sequence[int]) -> tuple[int, ...]:
    """``"256"`` or ``"512,256"`` (or ints) to a tuple of layer widths, checked by the one
    parser of ``--hidden`` (:func:`ppl_vae.validate.hidden`); ``""`` or ``()`` means none."""
    if (isinstance(spec, str) and not spec.strip()) or (
        isinstance(spec, (list, tuple)) and not spec
    ):
        return ()
    return validate.hidden(spec)
