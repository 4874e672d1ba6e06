r"""The feature network of :mod:`ppl_vae.measure.generation`: a small classifier of the data
set's labels, whose penultimate layer is the space samples are compared in.

FID uses Inception-v3's pool features, trained on ImageNet; no pretrained weights can be
downloaded here, and ImageNet features say little about 8x8 or 28x28 digits anyway. So
the features are those of a classifier trained on the same data set's TRAIN split (its
labels: digit classes, clothing types) and checked on its TEST split: an MLP
:math:`D \to 256 \to 64 \to C` with ReLUs, the features being the 64 post-ReLU
activations before the last layer. Its training is deterministic given the data (weights
and minibatch order drawn from their own generators with :data:`SEED`, Adam for
:data:`EPOCHS` epochs), takes a few seconds on mnist-5k on two cores (about 94% test accuracy),
and is done once per data set: :mod:`ppl_vae.runs.features` caches the weights (safetensors
+ JSON, keyed by :func:`fingerprint`). Numbers computed in two feature spaces (another
data set, another :data:`CODE_VERSION`) do not compare.

    >>> x, y = torch.rand(40, 6), torch.arange(40) % 2
    >>> net, acc = train_classifier(x, y, x, y, epochs=2)
    >>> features(net, x).shape, 0 <= acc <= 1
    (torch.Size([40, 64]), True)
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

#: Bumped whenever the architecture or the training recipe changes: cached networks of
#: another version are retrained, never reused.
CODE_VERSION = 1
HIDDEN, FEATURES = 256, 64
EPOCHS, BATCH, LR, SEED = 20, 128, 2e-3, 0


class FeatureNet(nn.Module):
    """The classifier: ``body`` gives the features, ``head`` the class logits."""

    def __init__(self, x_dim: int, classes: int):
        super().__init__()
        self.x_dim, self.classes = int(x_dim), int(classes)
        self.body = nn.Sequential(
            nn.Linear(self.x_dim, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, FEATURES), nn.ReLU()
        )
        self.head = nn.Linear(FEATURES, self.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def class_labels(y: object) -> torch.Tensor | None:
    """``y`` as class ids ``0..C-1`` when it is a 1-D tensor of whole numbers >= 0, else
    None (no labels, one-hot rows, real-valued targets)."""
    if not torch.is_tensor(y) or y.dim() != 1 or y.is_floating_point() or y.numel() == 0:
        return None
    return y.long() if int(y.min()) >= 0 else None


def fingerprint(name: str, arrays: list[torch.Tensor]) -> str:
    """SHA-256 of the data set's name and its arrays' shapes, dtypes and bytes."""
    h = hashlib.sha256(f"{name}\n{CODE_VERSION}\n".encode())
    for a in arrays:
        a = a.detach().cpu().contiguous()
        h.update(f"{tuple(a.shape)} {a.dtype}\n".encode())
        h.update(a.numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def _adam(params: list, grads: tuple, moments: list, step: int) -> None:
    """One Adam step (Kingma & Ba 2015; betas 0.9, 0.999, eps 1e-8), written out: any
    ``torch.optim`` optimiser imports ``torch._dynamo`` on first use (~1.6 s of CPU)."""
    for p, g, (m, v) in zip(params, grads, moments, strict=True):
        m.mul_(0.9).add_(g, alpha=0.1)
        v.mul_(0.999).addcmul_(g, g, value=0.001)
        denom = (v / (1 - 0.999**step)).sqrt_().add_(1e-8)
        p.addcdiv_(m, denom, value=-LR / (1 - 0.9**step))


@torch.no_grad()
def accuracy(net: FeatureNet, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    hits = sum(
        int((net(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum())
        for i in range(0, x.shape[0], 1000)
    )
    return hits / max(1, x.shape[0])


def train_classifier(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    epochs: int = EPOCHS,
    seed: int = SEED,
) -> tuple[FeatureNet, float]:
    """Train :class:`FeatureNet` on the train split (cross-entropy, Adam written out, batch
    :data:`BATCH`), deterministically given the data; returns it (on the CPU, in eval
    mode) and its accuracy on the test split. The global random state is untouched."""
    x_train, y_train = x_train.detach().cpu().float(), y_train.cpu().long()
    classes = int(max(int(y_train.max()), int(y_test.max()))) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureNet(x_train.shape[1], classes)
    order = torch.Generator().manual_seed(seed)
    params = list(net.parameters())
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    net.train()
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(x_train.shape[0], generator=order)
        for start in range(0, x_train.shape[0], BATCH):
            idx = perm[start : start + BATCH]
            loss = nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
            grads = torch.autograd.grad(loss, params)
            step += 1
            _adam(params, grads, moments, step)
    return net.eval(), accuracy(net, x_test.detach().cpu().float(), y_test.cpu().long())


@torch.no_grad()
def features(net: FeatureNet, x: torch.Tensor) -> torch.Tensor:
    """The ``(N, 64)`` features of the rows of ``x`` (on the CPU), 1000 rows at a time."""
    net.eval()
    x = x.detach().cpu().float()
    return torch.cat([net.body(x[i : i + 1000]) for i in range(0, x.shape[0], 1000)])
