""":class:`ppl_vae.infer.adam.Adam` against ``torch.optim.Adam(foreach=True)``, the oracle it
copies: identical parameters and moments after every step (not merely close), state dicts
that load into each other, and a training run that no longer imports ``torch._dynamo``."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from ppl_vae.infer.adam import Adam


def net(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 3), nn.Linear(3, 2)).to(dtype)


def steps(module: nn.Module, opt, n: int, start: int = 0) -> None:
    """``n`` steps on fresh data (seeded by step); the last layer gets no gradient on odd
    steps, and the learning rate changes per step, as the trainer's schedules do."""
    for k in range(start, start + n):
        g = torch.Generator().manual_seed(k)
        x = torch.randn(11, 7, generator=g, dtype=next(module.parameters()).dtype)
        opt.param_groups[0]["lr"] = 1e-2 / (1 + k)
        opt.zero_grad(set_to_none=True)
        out = module[:3](x) if k % 2 else module(x)
        (out.square().sum() + out.sum()).backward()
        opt.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_step_equals_torch_optim_adam_bit_for_bit(dtype):
    ours, theirs = net(dtype), net(dtype)
    a, b = Adam(ours.parameters(), lr=1e-2), torch.optim.Adam(theirs.parameters(), foreach=True)
    for k in range(6):
        steps(ours, a, 1, k)
        steps(theirs, b, 1, k)
        for p, q in zip(ours.parameters(), theirs.parameters()):
            assert torch.equal(p, q), f"step {k}"
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for i in sb["state"]:
        for key, value in sb["state"][i].items():
            assert (
                torch.equal(sa["state"][i][key], value) and sa["state"][i][key].dtype == value.dtype
            )


@pytest.mark.parametrize("direction", ["torch to ours", "ours to torch"])
def test_a_state_dict_loads_into_the_other_and_training_continues_identically(direction):
    first, second = (
        (torch.optim.Adam, Adam) if direction == "torch to ours" else (Adam, torch.optim.Adam)
    )
    module, reference = net(torch.float32), net(torch.float32)
    opt = first(module.parameters(), lr=1e-2)
    steps(module, opt, 3)
    resumed = second(module.parameters(), lr=1e-2)
    resumed.load_state_dict(opt.state_dict())
    steps(module, resumed, 3, start=3)
    ref = torch.optim.Adam(reference.parameters(), lr=1e-2, foreach=True)
    steps(reference, ref, 6)
    for p, q in zip(module.parameters(), reference.parameters()):
        assert torch.equal(p, q)


def test_a_state_with_weight_decay_is_refused():
    module = net(torch.float32)
    state = torch.optim.Adam(module.parameters(), weight_decay=0.1).state_dict()
    with pytest.raises(ValueError, match="weight_decay"):
        Adam(module.parameters()).load_state_dict(state)


def test_a_cpu_training_run_does_not_import_torch_dynamo():
    """What the class is for: ``torch.optim`` imports ``torch._dynamo`` (~1.6 s of CPU) at
    its first call; a ``fit`` on the CPU no longer does."""
    code = (
        "import sys\n"
        "from ppl_vae.infer.config import TrainConfig\n"
        "from ppl_vae.runs.config import RunConfig\n"
        "from ppl_vae.runs.train import train_run\n"
        "train = TrainConfig(epochs=1, batch_size=512, progress=False, device='cpu')\n"
        "args = {'hidden': [8], 'latent_dim': 2}\n"
        "train_run(RunConfig(model='vae', model_args=args, train=train))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
