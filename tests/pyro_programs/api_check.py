"""The conformance programs through the Python API (issue 22): fit, evaluation, generate,
analyze, each tiny. ``python tests/pyro_programs/api_check.py DATA_DIR [NAME ...]`` where
DATA_DIR holds make_data.py's files; prints one line per program and step."""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import traceback
from pathlib import Path

import torch
from ppl_vae import data, traces
from ppl_vae.infer.config import TrainConfig
from ppl_vae.infer.recommend import recommended
from ppl_vae.infer.trainer import fit
from ppl_vae.measure.likelihood import evaluation
from ppl_vae.runs.analyze import write_analysis

HERE = Path(__file__).resolve().parent

PROGRAMS = {  # name: (file, data, binarize, MODEL kwargs)
    "tutorial_vae": ("tutorial_vae.py", "mnist_small_x.npz", "none", dict(latent_dim=4, hidden=64)),
    "tutorial_vae_validated": (
        "tutorial_vae_validated.py",
        "mnist_small_x.npz",
        "threshold",
        dict(latent_dim=4, hidden=64),
    ),
    "vae_comparison": ("vae_comparison.py", "mnist_small_x.npz", "none", {}),
    "ss_vae_m2": ("ss_vae_m2.py", "mnist_small.npz", "threshold", dict(latent_dim=4, hidden=[64])),
    "cvae": ("cvae.py", "cvae.npz", "none", dict(latent_dim=4, hidden=[64])),
    "cevae_x": ("cevae.py", "cevae_x.npz", "none", dict(x_dim=5, latent_dim=2, hidden=16)),
    "cevae_xt": ("cevae.py", "cevae_xt.npz", "none", dict(x_dim=5, latent_dim=2, hidden=16)),
    "prodlda": ("prodlda.py", "prodlda.npz", "none", dict(x_dim=120, latent_dim=5, hidden=32)),
    "flow_prior": (
        "flow_prior.py",
        "mnist_small_x.npz",
        "threshold",
        dict(x_dim=784, latent_dim=4),
    ),
}


def load_module(path: Path):
    sys.path.insert(0, str(path.parent))  # ss_vae_m2.py imports utils.custom_mlp
    try:
        spec = importlib.util.spec_from_file_location(f"pyro_program_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(path.parent))


def build(module, kwargs):
    built = module.MODEL(**kwargs)
    return built if isinstance(built, tuple) else (built.model, built.guide)


def last_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[
        :300
    ]


def check(name: str, data_dir: Path) -> None:
    file, source, binarize, kwargs = PROGRAMS[name]
    ds = data.load(str(data_dir / source), binarize=binarize)
    steps = {}
    try:
        model, guide = build(load_module(HERE / file), kwargs)
        cfg = TrainConfig(epochs=1, batch_size=50, progress=False, **recommended(model, guide))
        result = fit(model, guide, ds, cfg)
        steps["fit"] = f"ok test_elbo={result.last.get('test_elbo'):.2f} jit={result.jit[:60]}"
    except Exception as exc:  # noqa: BLE001 - a conformance report, not a test
        print(f"{name} fit FAIL | {last_line(exc)}")
        traceback.print_exc(file=sys.stderr)
        return
    print(f"{name} fit {steps['fit']}")
    pair = result.pair
    jobs = {
        "evaluation": lambda: evaluation(pair, ds.x_test, ds.y_test, 10)["test_log_likelihood"],
        "generate": lambda: tuple(
            traces.generate(
                pair, pair.args(ds.x_test[:4], None if ds.y_test is None else ds.y_test[:4])
            ).shape
        ),
        "analyze": lambda: sorted(
            write_analysis(
                pair,
                ds.x_test,
                Path(tempfile.mkdtemp()) / "analysis",
                ds.y_test,
                points=2,
                draws=20,
                nuts_points=1,
                chains=1,
                nuts_samples=20,
                nuts_warmup=20,
            )
        )[:4],
    }
    for step, job in jobs.items():
        try:
            print(f"{name} {step} ok {job()}")
        except Exception as exc:  # noqa: BLE001
            print(f"{name} {step} FAIL | {last_line(exc)}")
            traceback.print_exc(file=sys.stderr)


if __name__ == "__main__":
    torch.manual_seed(0)
    data_dir = Path(sys.argv[1])
    for name in sys.argv[2:] or list(PROGRAMS):
        check(name, data_dir)
