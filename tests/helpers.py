"""Small shorthands for tests of the suite's own models (objects with model and guide)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_vae import traces
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.elbo import make_elbo
from ppl_vae.infer.objective import Objective
from ppl_vae.infer.trainer import FitResult, fit
from ppl_vae.programs import Programs, from_object


def pair_of(module, x: torch.Tensor | None = None) -> Programs:
    """The module's programs, traced once on ``x`` (or on random rows of its width)."""
    if x is None:
        x = torch.rand(2, module.x_dim)
    return from_object(module, x[:2])


def elbo_module(module, kind: str = "trace", num_particles: int = 1) -> Objective:
    return Objective(pair_of(module), make_elbo(kind, num_particles))


def log_prob_terms(module, x: torch.Tensor, particles: int | None = None) -> dict:
    return traces.terms(pair_of(module, x), (x,), particles)


def fit_module(module, data, config: TrainConfig | None = None, **kw) -> FitResult:
    return fit(module.model, module.guide, data, config, **kw)


# --------------------------------------------------------------- the CLI, file systems
def snapshot(directory) -> dict[str, tuple]:
    """``{relative path: (mode, bytes)}`` of everything under ``directory`` (folders map to
    ``(mode, None)``, symlinks to ``(mode, link target)``); ``{}`` when it does not exist."""
    import os
    import stat
    from pathlib import Path

    root = Path(directory)
    if not root.exists() and not root.is_symlink():
        return {}
    out = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st_ = os.lstat(path)
        rel = path.relative_to(root).as_posix()
        if stat.S_ISLNK(st_.st_mode):
            out[rel] = (st_.st_mode, os.readlink(path))
        elif stat.S_ISDIR(st_.st_mode) or not stat.S_ISREG(st_.st_mode):  # a FIFO: not read
            out[rel] = (st_.st_mode, None)
        else:
            out[rel] = (st_.st_mode, path.read_bytes())
    return out


#: A CLI server: one process per test process imports the CLI once, then runs each case
#: of a :func:`cli_cases` request in its own forked child (so every case starts from the
#: same freshly imported state, as a new ``ppl-vae`` process would, without paying the
#: imports again). A request is one JSON line ``{"cases", "logs", "env", "cwd"}``; a case is
#: ``{"argv": [...], "cwd": ..., "env": {...}, "exit_at_step": N, "setup": "python source"}``:
#: the child takes the caller's environment plus ``env`` and the caller's working folder,
#: then ``cwd``; ``exit_at_step`` makes it die like ``kill -9`` when training reaches step
#: N, and ``setup`` is executed first (a fault planted in the process: a full disk, a
#: program that raises). The answer is one JSON line of ``[returncode, stdout, stderr]``
#: per case.
_SERVER = r"""
import json, os, sys
import ppl_vae.cli, ppl_vae.runs.train, ppl_vae.infer.trainer  # noqa
import ppl_vae.runs.compare, ppl_vae.runs.sweep  # noqa
def run(case, out, err, env, cwd):
    pid = os.fork()
    if pid == 0:
        try:
            os.environ.clear(); os.environ.update(env); os.environ.update(case.get("env") or {})
            os.chdir(cwd); os.chdir(case.get("cwd") or ".")
            for fd, name in ((1, out), (2, err)):
                f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(f, fd)
            exec(case.get("setup") or "", {})
            if case.get("exit_at_step") is not None:
                real = ppl_vae.infer.trainer.training_loss
                def loss(fn, args, beta, step, real=real, at=case["exit_at_step"]):
                    if step == at:
                        os._exit(137)
                    return real(fn, args, beta, step)
                ppl_vae.infer.trainer.training_loss = loss
            code = ppl_vae.cli.main(case["argv"])
            sys.stdout.flush(); sys.stderr.flush()
        except BaseException:
            import traceback; traceback.print_exc(); code = 99
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return [os.waitstatus_to_exitcode(status), open(out).read(), open(err).read()]
for line in sys.stdin:
    req = json.loads(line)
    results = []
    for i, case in enumerate(req["cases"]):
        out, err = (os.path.join(req["logs"], f"{i}.{k}") for k in ("out", "err"))
        results.append(run(case, out, err, req["env"], req["cwd"]))
    sys.stdout.write(json.dumps(results) + "\n"); sys.stdout.flush()
"""
_server = None


def _cli_server():
    """This test process's CLI server, started on first use and ended at exit."""
    import atexit
    import os
    import subprocess
    import sys

    global _server
    if _server is None or _server.poll() is not None:
        _server = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        atexit.register(_server.kill)
    return _server


def cli_cases(cases: list[dict], env: dict | None = None, timeout: float = 900) -> list:
    """Run the CLI once per case, each in a fresh forked process of the CLI server, with
    this process's environment plus ``env``; return records with ``returncode``,
    ``stdout``, ``stderr`` (like ``subprocess.CompletedProcess``)."""
    import json
    import os
    import select
    import tempfile
    import types

    cases = [
        {**c, "argv": [str(a) for a in c["argv"]], "cwd": str(c.get("cwd") or ".")} for c in cases
    ]
    server = _cli_server()
    with tempfile.TemporaryDirectory() as logs:
        request = {"cases": cases, "logs": logs, "cwd": os.getcwd()}
        request["env"] = {**os.environ, **(env or {}), "OMP_NUM_THREADS": "1"}
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        ready, _, _ = select.select([server.stdout], [], [], timeout)
        assert ready, f"the CLI server gave no answer in {timeout} s"
        answer = server.stdout.readline()
        assert answer, "the CLI server died"
    return [
        types.SimpleNamespace(returncode=rc, stdout=o, stderr=e) for rc, o, e in json.loads(answer)
    ]


#: A user's program file whose guide reads a value off its data into Python: a trace or a
#: compiled recording freezes it, so the check must catch it and the run fall back.
DATA_DEPENDENT_PROGRAM = """
import pyro, pyro.distributions as dist, torch
from torch import nn


class Spread(nn.Module):
    def __init__(self, x_dim):
        super().__init__()
        self.enc, self.dec = nn.Linear(x_dim, 2), nn.Linear(2, x_dim)

    def model(self, x):
        pyro.module("dec", self.dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), 1.0).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("enc", self.enc)
        spread = 0.5 + float(x.mean())  # a value read into Python: frozen in a recording
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.enc(x), spread).to_event(1))
"""


class TwoSites(nn.Module):
    """z1 ~ N(0, I), z2 | z1 ~ N(z1, 0.5^2 I), x | z2 ~ N(A z2, noise^2 I), with the prior as
    guide (the AIS and amortisation-gap tests' program with two latent sites): log p(x) is
    N(0, 1.25 A A^T + noise^2 I)."""

    def __init__(self, noise: float = 0.6):
        super().__init__()
        self.register_buffer("A", torch.randn(5, 2))
        self.noise = noise

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            z2 = pyro.sample("z2", dist.Normal(z1, 0.5).to_event(1))
            pyro.sample("x", dist.Normal(z2 @ self.A.T, self.noise).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("z2", dist.Normal(z1, 0.5).to_event(1))

    def marginal(self):
        cov = 1.25 * self.A @ self.A.T + self.noise**2 * torch.eye(5)
        return dist.MultivariateNormal(torch.zeros(5), covariance_matrix=cov)
