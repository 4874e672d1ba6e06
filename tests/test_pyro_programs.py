"""Pyro's own VAE programs, model and guide code unchanged (``tests/pyro_programs/``),
through every command as a user types them: from a fresh folder, relative paths, the CLI;
and through the Python API. Tiny data (``make_data.py``), one epoch, tiny analysis."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from ppl_vae.cli import main

HERE = Path(__file__).resolve().parent / "pyro_programs"
TINY = ["--epochs", "1", "--batch-size", "50", "--no-progress"]
ANALYZE = (
    "--points 2 --draws 20 --nuts-points 1 --chains 1 --nuts-samples 10 --nuts-warmup 10 "
    "--amortization-points 1"
)

#: name: (file, data, extra train flags, sample refused?)
#: Programs whose analysis runs twice and whose run is then replaced by --overwrite (the
#: run-directory behaviour is the same for all; the others stop after the report).
REPEATED = {"tutorial_vae", "ss_vae_m2"}
#: Programs whose module declares a label predictor (the SSVAE subclass: ``label_predictor =
#: "classifier"``): metrics.json has test_accuracy.
CLASSIFIES = {"ss_vae_m2"}
PROGRAMS = {
    "tutorial_vae": ("tutorial_vae.py", "mnist_small_x.npz", "--latent-dim 2 --hidden 32", False),
    "tutorial_vae_validated_dynamic": (
        "tutorial_vae_validated.py",
        "mnist_small.npz",
        "--binarize dynamic --latent-dim 2 --hidden 32",
        False,
    ),
    "vae_comparison": ("vae_comparison.py", "mnist_small.npz", "", False),
    "ss_vae_m2": (
        "ss_vae_m2.py",
        "mnist_small.npz",
        "--labels 20 --binarize threshold --latent-dim 2 --hidden 32 --set aux_loss_multiplier=46",
        False,
    ),
    "cvae": ("cvae.py", "cvae.npz", "--latent-dim 2 --hidden 32", True),
    "cevae_x": ("cevae.py", "cevae_x.npz", "--latent-dim 2 --hidden 8", True),
    "cevae_xt": ("cevae.py", "cevae_xt.npz", "--latent-dim 2 --hidden 8", True),
    "prodlda": ("prodlda.py", "prodlda.npz", "--latent-dim 3 --hidden 16", True),
    "flow_prior": (
        "flow_prior.py",
        "mnist_small.npz",
        "--binarize threshold --latent-dim 2",
        False,
    ),
}


@pytest.fixture(scope="module")
def programs_dir(tmp_path_factory) -> Path:
    """The programs and their tiny data sets, once per module."""
    root = tmp_path_factory.mktemp("pyro-programs")
    shutil.copytree(HERE, root / "programs")
    spec = importlib.util.spec_from_file_location("make_data", HERE / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    make_data.main(root / "data", n_train=200, n_test=50)
    return root


@pytest.fixture
def fresh(programs_dir, tmp_path, monkeypatch) -> Path:
    """A fresh working folder holding programs/ and data/, with ss_vae_m2's sibling
    package ``utils`` installed (on the path), and a private trust store."""
    for sub in ("programs", "data"):
        (tmp_path / sub).symlink_to(programs_dir / sub)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.syspath_prepend(str(programs_dir / "programs"))
    return tmp_path


def run(line: str, capsys) -> tuple[int, str]:
    rc = main(line.split())
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_every_command_on_pyros_program(name, fresh, capsys):
    file, data, extra, refuses_samples = PROGRAMS[name]
    out = f"runs/{name}"
    rc, text = run(f"train programs/{file} --data data/{data} {extra} --out {out}", capsys)
    assert rc == 0, text
    metrics = json.loads(Path(out, "metrics.json").read_text())
    assert torch.isfinite(torch.tensor(metrics["test_elbo"]))
    assert ("test_accuracy" in metrics) == (name in CLASSIFIES)
    if name in CLASSIFIES:
        assert 0 <= metrics["test_accuracy"] <= 1 and metrics["train_labels_used"] == 20
        # MODEL() returns a closure over the SSVAE (main()'s two losses): its module's
        # train_defaults (TraceEnum_ELBO) still apply, and nothing warns about enumeration
        config = json.loads(Path(out, "config.json").read_text())
        assert config["train"]["elbo"] == "enum" and "enumerat" not in text, text
    rc, text = run(f"evaluate {out} --iwae-samples 4", capsys)
    assert rc == 0, text
    assert Path(out, "evaluation.json").is_file()
    rc, text = run(f"sample {out} -n 4 --out s.png", capsys)
    if refuses_samples:  # not images of the data: one clean line, nothing written
        assert rc == 2 and text.startswith("error:") and text.count("\n") == 1, text
        assert not Path("s.png").exists()
    else:
        assert rc == 0 and Path("s.png").is_file(), text
    # relative path; twice for two programs (CI time): the second finds the first's files its own
    for _ in range(2 if name in REPEATED else 1):
        rc, text = run(f"analyze {out} {ANALYZE}", capsys)
        assert rc == 0, text
    report = json.loads(Path(out, "analysis", "report.json").read_text())
    assert report["khat"] and Path(out, "analysis", "posterior.nc").is_file()
    assert all("skipped" in row or "nuts_mean" in row for row in report["nuts"])
    rc, text = run(f"report {out}", capsys)
    assert rc == 0 and Path(out, "report.html").is_file(), text
    if name not in REPEATED:
        return
    rc, text = run(
        f"train programs/{file} --data data/{data} {extra} --out {out} --overwrite", capsys
    )
    assert rc == 0, text  # the analysis files are in the manifest: --overwrite may remove them


def test_semi_supervised_ssvae_gets_homogeneous_one_hot_batches(fresh, capsys):
    """Pyro's convention: one-hot float labels, y=None for unlabelled batches."""
    from ppl_vae import registry
    from ppl_vae.data import load
    from ppl_vae.data.labels import EpochPlan, keep_labels
    from ppl_vae.programs import Programs

    spec = registry.load_file("programs/ss_vae_m2.py")
    model, guide = registry.instantiate(spec, x_dim=784, latent_dim=2, hidden=[16])
    ds = load("data/mnist_small.npz", binarize="threshold")
    y = keep_labels(ds.y_train, 20)
    pair = Programs(model, guide, (ds.x_train[:2],))
    assert pair.labels_optional and pair.label_form == "onehot"
    assert set(pair.latent_sites) == {"y", "z"}  # the unlabelled trace: the guide draws y
    plan = EpochPlan(pair, y, y.shape[0], 10)
    seen = []
    for i, idx in enumerate(plan.batches(torch.Generator().manual_seed(0))):
        args = plan.args(i, ds.x_train, idx)
        if len(args) == 2:
            assert args[1].dtype == torch.float32 and args[1].shape == (idx.shape[0], 10)
            assert (y[idx] >= 0).all()
        else:
            assert (y[idx] < 0).all()
        seen.append(len(args))
    assert seen.count(2) == 2 and seen.count(1) == 18 and seen[0] == 2


@pytest.mark.parametrize("source", ["m2-vae", "programs/ss_vae_m2.py"])
def test_test_accuracy_reads_the_declared_label_predictor(source, fresh):
    """The suite's M2 declares ``label_predictor = "classify"`` (class ids); Pyro's SSVAE
    (the added subclass) ``"classifier"`` (one-hot rows): both become the same
    test_accuracy."""
    from ppl_vae import registry
    from ppl_vae.data import load
    from ppl_vae.infer.trainer import example_batch
    from ppl_vae.programs import Programs
    from ppl_vae.runs.train import classification

    spec = registry.resolve(source)
    model, guide = registry.instantiate(spec, x_dim=784, latent_dim=2, hidden=[16])
    ds = load("data/mnist_small.npz", binarize="threshold")
    pair = Programs(model, guide, example_batch(ds, model, guide))
    owner = pair.owners[0]
    out = classification(pair, ds)
    if hasattr(owner, "classify"):
        predicted = owner.classify(ds.x_test)
    else:
        onehot = owner.classifier(ds.x_test)
        assert onehot.shape == (ds.x_test.shape[0], 10) and (onehot.sum(-1) == 1).all()
        predicted = onehot.argmax(-1)
    expected = float((predicted == ds.y_test).float().mean())
    assert out == {"test_accuracy": pytest.approx(expected), "train_labels_used": 200}
    assert 0 <= out["test_accuracy"] <= 1


@pytest.mark.parametrize(
    "declared, expected",
    [(None, {}), ("classifier", "accuracy"), ("predict", "error"), ("broken", "note")],
)
def test_a_label_predictor_is_declared_never_guessed_from_a_name(declared, expected, fresh):
    """A module with a ``classifier`` attribute but no declaration gets no test_accuracy
    (scANVI's ``classifier`` is q(y|z2), not a function of x); a declaration naming no
    method is one error; a declared predictor that raises leaves a note."""
    import pyro
    import pyro.distributions as dist
    from torch import nn

    from ppl_vae.data import load
    from ppl_vae.errors import UserError
    from ppl_vae.programs import Programs
    from ppl_vae.runs.train import classification

    ds = load("data/mnist_small.npz", binarize="threshold")

    class Labelled(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(784, 10)

        def model(self, x):
            pyro.module("net", self.net)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
                logits = self.net(x).sum(-1) + z
                pyro.sample("obs", dist.Bernoulli(logits=logits), obs=x[:, 0])

        def guide(self, x):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(self.net(x)[:, 0], 1.0))

        def classifier(self, x):
            return self.net(x)

        def broken(self, x):
            raise ValueError("not a function of x\nsecond line")

    if declared is not None:
        Labelled.label_predictor = declared
    owner = Labelled()
    pair = Programs(owner.model, owner.guide, (ds.x_train[:2],))
    if expected == "error":
        with pytest.raises(UserError, match="names no method"):
            classification(pair, ds)
        return
    out = classification(pair, ds)
    if expected == "accuracy":
        want = float((owner.net(ds.x_test).argmax(-1) == ds.y_test).float().mean())
        assert out["test_accuracy"] == pytest.approx(want)
    elif expected == "note":
        assert out == {"test_accuracy_note": "broken(x) failed: ValueError: not a function of x"}
    else:
        assert out == expected


def test_a_model_file_importing_its_sibling_module_is_refused_in_one_line(
    tmp_path, capsys, monkeypatch
):
    shutil.copytree(HERE, tmp_path / "programs")
    monkeypatch.chdir(tmp_path)
    for key in [k for k in sys.modules if k == "utils" or k.startswith("utils.")]:
        monkeypatch.delitem(sys.modules, key)  # imported (installed) by an earlier test
    rc = main(["train", "programs/ss_vae_m2.py", "--epochs", "1", "--out", "run"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and err.count("\n") == 1
    assert "self-contained" in err and "utils" in err
    assert not Path("run").exists()


def test_a_runs_model_copy_runs_from_its_hashed_bytes(tmp_path):
    from ppl_vae import registry
    from ppl_vae.errors import UserError

    src = tmp_path / "model.py"
    shutil.copy(HERE / "tutorial_vae.py", src)
    import hashlib

    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    assert registry.load_file(src, sha).factory is not None
    assert not (tmp_path / "__pycache__").exists()  # compiled from bytes, never imported
    src.write_text(src.read_text() + "\n# changed\n")
    with pytest.raises(UserError, match="changed since its hash"):
        registry.load_file(src, sha)


#: The estimator each program trains with from Python, and each latent site's KL.
API_ELBO = {
    "tutorial_vae": ("meanfield", {"latent": "analytic"}),
    "ss_vae_m2": ("enum", {"y": "enumerated", "z": "sampled"}),
    # its guide draws t and y before z, the model z before t and y: not mean-field
    "cevae_xt": ("trace", {"t": "sampled", "y": "sampled", "z": "sampled"}),
    "cvae": ("meanfield", {"z": "analytic"}),
}


@pytest.mark.parametrize("name", ["tutorial_vae", "ss_vae_m2", "cevae_xt", "cvae"])
def test_python_api(name, fresh):
    from ppl_vae import registry, traces
    from ppl_vae.data import load
    from ppl_vae.infer.recommend import recommended, recommended_config
    from ppl_vae.infer.trainer import fit
    from ppl_vae.measure.metrics import evaluate

    file, data, extra, _ = PROGRAMS[name]
    spec = registry.load_file(f"programs/{file}")
    binarize = "threshold" if "threshold" in extra else "none"
    ds = load(f"data/{data}", binarize=binarize)
    options = {"latent_dim": 2}
    if name != "cevae_xt":
        options["hidden"] = [32] if name != "tutorial_vae" else 32
    model, guide = registry.instantiate(spec, x_dim=ds.x_dim, **options)
    # Pyro's settings (SSVAE: TraceEnum_ELBO) with ours over them; a TrainConfig alone
    # would be taken as is
    config = recommended_config(model, guide, epochs=1, batch_size=50, progress=False)
    result = fit(model, guide, ds, config)
    assert result.config.elbo == recommended(model, guide).get("elbo", "auto")
    assert result.config.elbo == ("enum" if name == "ss_vae_m2" else "auto")
    # what auto resolved to: the closed-form KL where every site has one, in model order
    assert (result.choice.elbo, result.choice.kl) == API_ELBO[name], result.choice.reason
    pair = result.pair
    out = evaluate(pair, ds.x_test, ds.y_test, 50)
    assert torch.isfinite(torch.tensor(out["elbo"]))
    assert (out["recon_mse"] is None) == (not pair.x_shaped)
    assert traces.generate(pair, pair.args(ds.x_test[:3])).shape[0] == 3
    if name in ("tutorial_vae", "cvae"):
        assert_elbo_is_pyros(pair, pair.args(ds.x_test, ds.y_test))


def assert_elbo_is_pyros(pair, args, repeats: int = 4, draws: int = 64) -> None:
    """The suite's test ELBO (the closed-form KL where ``auto`` chose it) equals an
    independent estimate by Pyro's own ``Trace_ELBO`` (the KL from draws) on the same
    weights and rows, within four standard errors of their Monte Carlo difference."""
    import statistics

    import pyro

    from ppl_vae.measure.metrics import evaluate

    pair.eval()
    n = args[0].shape[0]
    x, y = args[0], (args[1] if len(args) > 1 else None)
    ours = [evaluate(pair, x, y, n, seed=s, draws=draws)["elbo"] for s in range(repeats)]
    pyros = []
    elbo = pyro.infer.Trace_ELBO(num_particles=draws)  # Pyro's CVAE masks by x's shape
    with pair.scope():
        for s in range(repeats):
            pyro.set_rng_seed(100 + s)
            pyros.append(-elbo.loss(pair.model, pair.guide, *args) / n)
    se = (statistics.variance(ours) / repeats + statistics.variance(pyros) / repeats) ** 0.5
    diff = statistics.mean(ours) - statistics.mean(pyros)
    assert abs(diff) < 4 * se + 1e-3, (statistics.mean(ours), statistics.mean(pyros), se)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
