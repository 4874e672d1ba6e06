"""Adam (Kingma & Ba 2015) on the CPU, without ``torch.optim``: the same update, bit for bit.

For each parameter :math:`\\theta` with gradient :math:`g` at step :math:`t`:

.. math::

    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g, \\qquad
    v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g^2, \\qquad
    \\theta_t = \\theta_{t-1} - \\frac{\\alpha}{1-\\beta_1^t}
        \\frac{m_t}{\\sqrt{v_t} / \\sqrt{1-\\beta_2^t} + \\epsilon}.

Why not ``torch.optim.Adam``: every ``torch.optim.Optimizer`` imports ``torch._dynamo``
(and with it sympy) the first time any of its methods runs -- about 1.6 s of CPU in a
``ppl-vae train`` that otherwise takes a few seconds, for a compiler the step never uses.
:class:`Adam` is the multi-tensor (``foreach=True``) path of ``torch.optim.Adam`` with its
defaults (no weight decay, no AMSGrad), written with the same ``torch._foreach_*`` calls in
the same order, so parameters and moments are identical after every step (tested against
``torch.optim.Adam``), and its :meth:`state_dict` is ``torch.optim.Adam``'s: checkpoints
written by either load into the other. The trainer uses it on the CPU; on CUDA it keeps
``torch.optim.Adam(fused=True)``.

Example::

    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = Adam([w], lr=0.1)
    >>> (w * w).sum().backward(); opt.step()
    >>> [round(v, 4) for v in w.tolist()]
    [0.9, 0.9, 0.9]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

HYPER = {
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 0.0,
    "amsgrad": False,
    "maximize": False,
    "foreach": True,
    "capturable": False,
    "differentiable": False,
    "fused": None,
    "decoupled_weight_decay": False,
}


class Adam:
    """``torch.optim.Adam(params, lr, foreach=True)``'s interface as the trainer uses it:
    :attr:`param_groups` (one group; its ``lr`` may change between steps), :attr:`state`,
    :meth:`zero_grad`, :meth:`step`, :meth:`state_dict`, :meth:`load_state_dict`."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3):
        self.param_groups = [{"params": list(params), **HYPER, "lr": lr}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        for p in params:
            if p not in self.state:  # torch.optim.Adam's lazy state: a float32 CPU step
                self.state[p] = {
                    "step": torch.tensor(0.0, dtype=torch.float32),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
        states = [self.state[p] for p in params]
        grads = [p.grad for p in params]
        m, v = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        steps = [s["step"] for s in states]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        torch._foreach_add_(steps, torch.tensor(1.0), alpha=1.0)
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
        t = [s.item() for s in steps]
        step_size = [(lr / (1 - beta1**k)) * -1 for k in t]
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, [(1 - beta2**k) ** 0.5 for k in t])
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, m, denom, step_size)

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim.Adam.state_dict()``'s layout: state by parameter index."""
        group = self.param_groups[0]
        index = {id(p): i for i, p in enumerate(group["params"])}
        state = {index[id(p)]: dict(s) for p, s in self.state.items()}
        packed = {k: v for k, v in group.items() if k != "params"}
        return {"state": state, "param_groups": [{**packed, "params": list(index.values())}]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict` of this class or of ``torch.optim.Adam`` (one group, no
        weight decay, no AMSGrad, not maximising: what the trainer builds)."""
        groups = state_dict["param_groups"]
        params = self.param_groups[0]["params"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(params):
            raise ValueError("the optimizer state does not match the parameters")
        saved = groups[0]
        for key in ("weight_decay", "amsgrad", "maximize"):
            if saved.get(key, HYPER[key]) != HYPER[key]:
                raise ValueError(f"this Adam does not implement {key}={saved[key]!r}")
        self.param_groups[0].update({k: v for k, v in saved.items() if k != "params"})
        self.param_groups[0]["betas"] = tuple(self.param_groups[0]["betas"])
        self.state = {}
        for i, s in state_dict["state"].items():
            p = params[saved["params"].index(int(i))]
            self.state[p] = {
                "step": torch.as_tensor(s["step"], dtype=torch.float32).detach().clone().cpu(),
                "exp_avg": s["exp_avg"].detach().to(p.device, p.dtype).clone(),
                "exp_avg_sq": s["exp_avg_sq"].detach().to(p.device, p.dtype).clone(),
            }
