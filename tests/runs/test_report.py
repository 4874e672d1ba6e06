"""report.html: one self-contained page per run, checked as text and in a real browser."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

from ppl_vae import cli
from ppl_vae.errors import UserError
from ppl_vae.figures import images as plots
from ppl_vae.infer.config import TrainConfig
from ppl_vae.runs.config import RunConfig
from ppl_vae.runs.report import REPORT, plus_minus, render, stale_note, write_report
from ppl_vae.runs.rundir import RunDir
from ppl_vae.runs.train import train_run

IMAGE_FIGURES = {
    "training_curves.png",
    "latent_scatter.png",
    "reconstructions.png",
    "samples.png",
    "latent_manifold.png",
    "interpolation.png",
    "traversals.png",
}
CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed: run `apt-get update && apt-get install -y chromium`",
)


def config(data: str, epochs: int = 1, **model_args) -> RunConfig:
    return RunConfig(
        model="vae",
        model_args={"latent_dim": 2, "hidden": "32", **model_args},
        data=data,
        train=TrainConfig(epochs=epochs, progress=False, device="cpu"),
    )


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A 2-epoch 2-D VAE on digits, trained into a run directory (train writes the report)."""
    out = tmp_path_factory.mktemp("digits") / "run"
    train_run(config("digits", epochs=2), out=out)
    return out


def data_uris(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_train_writes_every_figure_and_a_report_that_embeds_them(digits_run):
    assert {p.name for p in digits_run.glob("*.png")} == IMAGE_FIGURES
    page = (digits_run / REPORT).read_text()
    embedded = data_uris(page)
    assert sorted(embedded) == sorted(p.read_bytes() for p in digits_run.glob("*.png"))
    assert "<img" in page and page.count("<img") == len(IMAGE_FIGURES)
    assert not re.search(r'src="(?!data:)', page)  # self-contained: nothing to fetch
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert metrics["test_elbo_stderr"] > 0 and "train.epochs" in page
    # the headline card and the table show the test ELBO with its standard error
    shown = plus_minus(metrics["test_elbo"], metrics["test_elbo_stderr"])
    assert page.count(f">{shown}<") == 2, shown
    assert "<th>test_elbo_stderr</th>" not in page  # folded into the test_elbo row


def test_non_image_data_gets_curves_and_scatter_only(tmp_path):
    out = tmp_path / "run"
    train_run(config("synthetic", likelihood="gaussian"), out=out)
    assert {p.name for p in out.glob("*.png")} == {"training_curves.png", "latent_scatter.png"}
    assert len(data_uris((out / REPORT).read_text())) == 2


def fake_run(d: Path) -> Path:
    """A run directory by hand: figures in it and in analysis/, and every JSON file."""
    (d / "analysis").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model": "vae", "train": {"lr": 0.001}}))
    metrics = {"test_elbo": -25.123456, "rate": None, "kl_per_dim": [1.5, 0.25], "history": [{}]}
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "evaluation.json").write_text(json.dumps({"test_log_likelihood": -24.5}))
    analysis = {
        "psis": {"<k-hat>": 0.42},
        "khat": [0.1] * 50,  # long per-point lists stay out of the table
        "nuts": [{"point": 7, "w2": 0.1765, "guide_sd": [0.3, 0.4]}, {"point": 19, "w2": 0.25}],
    }
    (d / "analysis" / "report.json").write_text(json.dumps(analysis))
    plots.image_grid(torch.rand(4, 64), (8, 8), d / "samples.png")
    plots.image_grid(torch.rand(2, 64), (8, 8), d / "analysis" / "khat.png")
    (d / "notes.txt").write_text("not a figure")
    run = RunDir(d)  # files the run wrote are in its manifest: only those are shown
    with run.lock():
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.name not in ("notes.txt", ".lock", "manifest.json"):
                run.record(p.relative_to(d).as_posix())
    (d / "planted.png").symlink_to(d / "samples.png")  # not ours: never embedded
    return d


def test_report_shows_every_table_and_figure(tmp_path):
    d = fake_run(tmp_path / "run")
    page = write_report(d).read_text()
    assert sorted(data_uris(page)) == sorted(
        [(d / "samples.png").read_bytes(), (d / "analysis" / "khat.png").read_bytes()]
    )
    for text in ("-25.123", "[1.5, 0.25]", "test_log_likelihood", "-24.5", "train.lr", "0.42"):
        assert text in page, text
    assert "psis.&lt;k-hat&gt;" in page and "<k-hat>" not in page  # escaped
    assert "history" not in page  # drawn as curves, not dumped as a table
    assert "0.1, 0.1" not in page
    # Records (the NUTS comparison per point) become one table row each.
    nuts = page[page.index("<h3>nuts</h3>") :]
    assert "<th>point</th><th>w2</th><th>guide_sd</th>" in nuts
    assert '<td class="num">0.1765</td>' in nuts and "[0.3, 0.4]" in nuts and "None" in nuts
    assert page.index("samples.png") < page.index("analysis/khat.png")


@pytest.mark.parametrize(
    "value, stderr, shown",
    [
        (-104.2271, 0.41, "-104.2 ± 0.4"),  # one significant digit of the error
        (-104.2271, 0.149, "-104.23 ± 0.15"),  # two when it starts with a 1
        (3.14159, 0.0123, "3.142 ± 0.012"),
        (1234.5, 37.0, "1234 ± 37"),  # never fewer digits than the units
        (-24.5, 0.0, "-24.5"),  # no error to show
        (-24.5, None, "-24.5"),
        (-24.5, float("nan"), "-24.5"),
    ],
)
def test_plus_minus_rounds_the_value_to_its_standard_error(value, stderr, shown):
    assert plus_minus(value, stderr) == shown


def test_report_shows_each_estimate_with_its_standard_error(tmp_path):
    """A ``<key>_stderr`` beside ``<key>`` reads ``value ± stderr``, in the headline cards and
    the tables alike; a stderr without its key, or a None one, stays as it is."""
    d = fake_run(tmp_path / "run")
    evaluation = {
        "test_log_likelihood": -24.5123,
        "test_log_likelihood_stderr": 0.31,
        "rate": 4.0,
        "rate_stderr": None,
        "orphan_stderr": 0.5,
        "ais": {"bdmc_gap": 1.234, "bdmc_gap_se": 0.05},  # the AIS records' spelling
    }
    (d / "evaluation.json").write_text(json.dumps(evaluation))
    metrics = {"test_elbo": -25.123456, "test_elbo_stderr": 0.0123}
    (d / "metrics.json").write_text(json.dumps(metrics))
    page = write_report(d).read_text()
    cards = page[page.index('<div class="headline">') : page.index("<h2>Figures")]
    assert '<div class="value">-24.5 ± 0.3</div>' in cards
    assert '<div class="value">-25.123 ± 0.012</div>' in cards
    assert '<div class="value">4</div>' in cards  # rate: no standard error
    assert '<th>test_log_likelihood</th><td class="num">-24.5 ± 0.3</td>' in page
    assert "<th>test_log_likelihood_stderr</th>" not in page
    assert "<th>orphan_stderr</th>" in page and "<th>rate_stderr</th>" not in page
    assert '<th>ais.bdmc_gap</th><td class="num">1.23 ± 0.05</td>' in page


@pytest.mark.parametrize(
    "of, label",
    [(None, "test log p(x)"), ("x", "test log p(x)"), ("x, y", "test log p(x, y)")]
    + [("x | y", "test log p(x | y)")],
)
def test_the_headline_names_what_the_likelihood_is_of(tmp_path, of, label):
    d = fake_run(tmp_path / "run")
    record = {"test_log_likelihood": -24.5, "test_log_likelihood_ais": -24.0}
    if of is not None:  # a record written before evaluate said so reads log p(x)
        record["log_likelihood_of"] = of
    (d / "evaluation.json").write_text(json.dumps(record))
    page = write_report(d).read_text()
    cards = page[page.index('<div class="headline">') : page.index("<h2>Figures")]
    assert f'<div class="label">{label}</div>' in cards
    assert f'<div class="label">{label}, AIS</div>' in cards


def test_results_say_which_step_they_describe_and_the_report_flags_them_after_resume(
    run_copy, capsys
):
    """evaluation.json, analysis/report.json and calibration.json record the checkpoint's
    step; after ``train --resume`` the report says they describe an older one, until run
    again."""
    from ppl_vae.runs import checkpoint

    run = run_copy
    first = checkpoint.recorded_step(run)
    assert first == json.loads((run / "metrics.json").read_text())["steps"] > 0
    assert cli.main(["evaluate", "run", "--iwae-samples", "2", "--no-progress"]) == 0
    analyze = "analyze run --points 2 --draws 20 --nuts-points 0 --amortization-points 1"
    assert cli.main(analyze.split()) == 0
    assert cli.main("calibrate run --simulations 20 --draws 9 --bins 5".split()) == 0
    for name in ("evaluation.json", "analysis/report.json", "calibration.json"):
        assert json.loads((run / name).read_text())["step"] == first, name
    assert 'class="stale"' not in (run / REPORT).read_text()
    assert (
        cli.main(["train", "vae", "--out", "run", "--resume", "--epochs", "4", "--no-progress"])
        == 0
    )
    now = checkpoint.recorded_step(run)
    assert now > first
    page = (run / REPORT).read_text()
    for done, command in (
        ("evaluated", "evaluate"),
        ("analysed", "analyze"),
        ("calibrated", "calibrate"),
    ):
        note = (
            f"({done} at step {first}; the run has since trained to step {now} — "
            f"run `ppl-vae {command}` again)"
        )
        assert f'<p class="stale">{note}</p>' in page, note
    # the headline's ELBO is the run's own (metrics.json), not the stale evaluation's
    metrics = json.loads((run / "metrics.json").read_text())
    cards = page[page.index('<div class="headline">') : page.index("<h2>Figures")]
    assert plus_minus(metrics["test_elbo"], metrics["test_elbo_stderr"]) in cards
    assert cli.main(["evaluate", "run", "--iwae-samples", "2", "--no-progress"]) == 0
    page = (run / REPORT).read_text()
    assert "(evaluated at step" not in page and "(analysed at step" in page
    capsys.readouterr()


@pytest.mark.parametrize(
    "name, record, step, note",
    [
        ("evaluation.json", {"step": 90}, 90, None),
        ("evaluation.json", {"step": 90}, None, None),  # the run's step unknown: no claim
        ("evaluation.json", {"step": 90}, 135, "(evaluated at step 90; the run has since"),
        ("analysis/report.json", {"step": 90}, 135, "run `ppl-vae analyze` again)"),
        ("evaluation.json", {"step": 90}, 45, "the run holds a checkpoint of step 45"),
        ("evaluation.json", {}, 135, "does not say which step it was evaluated at"),
        ("metrics.json", {"steps": 90}, 135, None),  # not a record of one checkpoint
    ],
)
def test_stale_note(name, record, step, note):
    got = stale_note(name, record, step)
    assert got is None if note is None else note in got


def test_report_refuses_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        write_report(tmp_path)


def test_cli_report_prints_the_path(tmp_path, capsys):
    d = fake_run(tmp_path / "run")
    assert cli.main(["report", str(d)]) == 0
    assert capsys.readouterr().out.strip() == str(d / REPORT)
    assert (d / REPORT).read_text() == render(d)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env, check=True)


# Counts images that decoded (complete with a natural width) once the page has loaded.
CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter((i) => i.complete && i.naturalWidth > 0).length;
  const p = document.createElement("p");
  p.id = "image-check";
  p.textContent = `loaded=${ok} total=${imgs.length}`;
  document.body.appendChild(p);
});
</script>"""
BROKEN = '<img src="data:image/png;base64,iVBORw0KGgoAAAA" alt="broken on purpose">'


@needs_chromium
def test_report_renders_in_chromium_with_all_images_loaded(digits_run, tmp_path):
    page = (digits_run / REPORT).read_text()
    # A copy with the counting script and one broken image: the check must tell them apart.
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", BROKEN + CHECK + "</body>"))
    dom = chromium(
        tmp_path,
        "--run-all-compositor-stages-before-draw",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.as_uri(),
    ).stdout
    found = re.search(r'id="image-check">loaded=(\d+) total=(\d+)<', dom)
    assert found, dom[-2000:]
    assert (int(found[1]), int(found[2])) == (len(IMAGE_FIGURES), len(IMAGE_FIGURES) + 1)

    shot = tmp_path / "report.png"
    chromium(
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1200,3000",
        "--hide-scrollbars",
        (digits_run / REPORT).as_uri(),
    )
    im = Image.open(shot)
    assert im.size == (1200, 3000)
    # A rendered page, not a blank one: many grey levels from the digit grids and plots.
    assert len(im.convert("L").getcolors(256)) > 50


def test_report_refuses_a_folder_that_ppl_vae_did_not_write(tmp_path, capsys):
    # A user's own folder that happens to hold a config.json: no report, no manifest, no lock.
    from helpers import snapshot

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"model": "vae"}\n')
    before = snapshot(folder)
    assert cli.main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "not a run directory" in err[0]
    assert snapshot(folder) == before
