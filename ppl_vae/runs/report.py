"""One self-contained HTML page per run directory: ``DIR/report.html``.

The page reads the way a user looks at a run: first one line saying what was trained,
then the headline numbers (test ELBO, importance-weighted log p(x) when evaluated, named
log p(x, y) or log p(x | y) where ``evaluation.json``'s ``log_likelihood_of`` says so, rate,
distortion, active units, reconstruction error, seconds), then every PNG figure of the
directory and of ``DIR/analysis/`` side by side where they fit (latent manifold and
reconstructions, samples and latent scatter, training curves), then the full tables of
``metrics.json``, ``evaluation.json`` and ``analysis/report.json``, and last the whole
configuration folded away in a ``<details>`` element. An evaluation or analysis written at
another step than the run's checkpoint (``train --resume`` since) says so beside its table
and its headline numbers, and gives way to ``metrics.json`` where both have a figure.
Images are embedded as base64 data URIs, so the file can be mailed or archived alone; the
page has no scripts and loads nothing.

Only files the run wrote are read (:meth:`~ppl_vae.runs.rundir.RunDir.is_own_regular_file`:
listed in the run's manifest, regular, no symlink on the way), so a link such as
``leak.png -> /etc/passwd`` placed in a run directory never ends up in a page that users
mail around. The page itself is written atomically under the run's lock.

Example::

    >>> from ppl_vae.infer.config import TrainConfig
    >>> from ppl_vae.runs.config import RunConfig
    >>> from ppl_vae.runs.train import train_run
    >>> import tempfile
    >>> out = tempfile.mkdtemp() + "/run"
    >>> job = train_run(RunConfig(train=TrainConfig(epochs=1, progress=False)), out)
    >>> write_report(out).name                       # train_run wrote it too
    'report.html'
"""

from __future__ import annotations

import base64
import html
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ppl_vae.errors import UserError
from ppl_vae.runs.rundir import RunDir

REPORT = "report.html"


# (file, section title) in page order; files not named here follow, sorted.
TABLES = (
    ("metrics.json", "Metrics (test set unless named train)"),
    ("evaluation.json", "Evaluation (ppl-vae evaluate)"),
    ("analysis/report.json", "Analysis (ppl-vae analyze)"),
    ("disentanglement.json", "Disentanglement (ppl-vae disentangle)"),
    ("calibration.json", "Calibration of the guide (ppl-vae calibrate)"),
)


CAPTIONS = {
    "latent_manifold.png": "Latent manifold: decoder means over a grid of prior quantiles",
    "reconstructions.png": "Reconstructions: test inputs (upper row) and their outputs (lower)",
    "samples.png": "Samples: decoder means of codes drawn from the prior",
    "class_samples.png": "Class-conditional samples: one row per label y, z drawn from p(z)",
    "latent_scatter.png": "Latent space: posterior means of the test set, coloured by label",
    "training_curves.png": "Training curves",
    "interpolation.png": "Interpolation: decoded codes on the line between two test images",
    "traversals.png": "Traversals: one latent dimension varied per row, the others fixed",
    "disentanglement_traversals.png": "Traversals labelled by the factor each latent "
    "captures best (normalised mutual information)",
    "calibration.png": "Simulation-based calibration: ranks of the true z among guide draws "
    "per latent dimension (uniform within the band when q(z|x) is the posterior)",
}


# Headline numbers: (key, label, how to read it); taken from evaluation.json when it has
# the key (the more careful estimate), else from metrics.json.
HEADLINE = (
    ("test_elbo", "test ELBO", "nats per example, higher is better"),
    ("test_log_likelihood", "test log p(x)", "importance-weighted, nats"),
    ("test_log_likelihood_ais", "test log p(x), AIS", "annealed importance sampling, nats"),
    ("test_log_likelihood_upper", "BDMC upper bound", "log p(x) of simulated x, nats"),
    ("amortization_gap", "amortisation gap", "per-point ELBO - encoder ELBO, nats"),
    ("fd", "Fréchet distance", "samples vs test set, classifier features; lower is better"),
    ("precision", "precision", "samples inside the data's k-NN manifold"),
    ("recall", "recall", "data inside the samples' k-NN manifold"),
    ("rate", "rate", "KL(q || p), nats"),
    ("distortion", "distortion", "-log p(x|z), nats"),
    ("active_units", "active units", "latent dimensions in use"),
    ("test_recon_mse", "reconstruction error", "squared error per example"),
    ("seconds", "seconds", "training time"),
)


#: Records written from one checkpoint: file -> (what was done, the command that redoes it).
#: Each records the ``step`` it describes; the page flags one the run has trained past.
FROM_CHECKPOINT = {
    "evaluation.json": ("evaluated", "ppl-vae evaluate"),
    "analysis/report.json": ("analysed", "ppl-vae analyze"),
    "calibration.json": ("calibrated", "ppl-vae calibrate"),
    "disentanglement.json": ("scored", "ppl-vae disentangle"),
}


MAX_LIST = 20  # numeric lists up to this long are shown inline in the tables


SMALL = 450  # figures narrower than this (pixels) are shown at twice their size


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.8em; }
p.what { color: #444; margin-top: 0; }
div.headline { display: flex; flex-wrap: wrap; gap: 0.8em; margin: 1em 0; }
div.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.5em 0.9em; min-width: 9em; }
div.card .value { font-size: 1.5em; font-family: ui-monospace, monospace; }
div.card .label { font-weight: 600; } div.card .note { color: #666; font-size: 0.8em; }
div.figures { display: flex; flex-wrap: wrap; gap: 0 1.5em; align-items: flex-start; }
details { margin-top: 1.8em; } summary { font-size: 1.2em; font-weight: bold; cursor: pointer; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }
td.num { font-family: ui-monospace, monospace; text-align: right; }
figure { margin: 1em 0; max-width: 100%; } figcaption { color: #555; margin-top: 0.3em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
img.zoom { image-rendering: pixelated; }
div.wide { overflow-x: auto; }
p.stale, div.card .note.stale { color: #a33; }
"""


def own_record(run: RunDir, name: str) -> Any:
    """The run's JSON record ``name`` read the one way (:meth:`RunDir.read_json`: bounded,
    no link, no FIFO), or None when the run did not write it with one link
    (:meth:`RunDir.embeddable`) or it cannot be read: the page shows what it can."""
    if not run.embeddable(name):
        return None
    try:
        return run.read_json(name)
    except UserError:
        return None


def fmt(value: Any) -> str:
    """A table cell: floats to 5 significant digits, short numeric lists inline."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.5g}" if math.isfinite(value) else str(value)
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


#: ``<key>_stderr`` (or the AIS records' ``<key>_se``) beside ``<key>``: its standard error.
STDERR = ("_stderr", "_se")
#: ``<key>_scaled`` beside ``<key>``: the same figure in the program's own units.
SCALED = "_scaled"


def stderr_of(source: dict, key: str) -> Any:
    """The standard error a record holds beside ``key``, or None."""
    return next((source[key + s] for s in STDERR if key + s in source), None)


def plus_minus(value: float, stderr: float | None) -> str:
    """``value ± stderr`` with the value rounded to the standard error's precision (one
    significant digit of the error, two when it starts with a 1), as physicists write it.

    >>> plus_minus(-104.2271, 0.41)
    '-104.2 ± 0.4'
    >>> plus_minus(3.14159, 0.0123)
    '3.142 ± 0.012'
    >>> plus_minus(2.5, None)
    '2.5'
    """
    ok = isinstance(stderr, int | float) and not isinstance(stderr, bool)
    if not ok or not math.isfinite(stderr) or stderr <= 0 or not math.isfinite(value):
        return fmt(value)
    digits = -math.floor(math.log10(stderr))
    if round(stderr * 10**digits) == 1:  # a leading 1 keeps a second digit
        digits += 1
    digits = max(digits, 0)
    return f"{value:.{digits}f} ± {stderr:.{digits}f}"


def with_errors(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any, Any]]:
    """``(key, value, stderr)`` rows of ``(key, value)`` pairs: a ``<key>_stderr`` that sits
    beside its ``<key>`` is folded into that row (and not listed alone); a ``<key>_scaled``
    (the figure in the program's own units) equal to ``<key>`` (a program with no scale of
    its own) is not listed twice."""
    values = dict(pairs)
    folded = {
        k
        for k in values
        for s in STDERR
        if k.endswith(s) and isinstance(values.get(k[: -len(s)]), int | float)
    }
    folded |= {
        k
        for k, v in values.items()
        if k.endswith(SCALED) and k[: -len(SCALED)] in values and values[k[: -len(SCALED)]] == v
    }
    return [(k, v, stderr_of(values, k)) for k, v in pairs if k not in folded]


def cell(value: Any, stderr: Any = None) -> str:
    """A table cell; a number with a standard error reads ``value ± stderr``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and stderr is not None:
        return plus_minus(value, stderr)
    return fmt(value)


def is_cell(value: Any) -> bool:
    """Scalars and short lists of numbers go in a table; anything bigger does not."""
    if isinstance(value, str | int | float | bool) or value is None:
        return True
    return (
        isinstance(value, list)
        and len(value) <= MAX_LIST
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )


def flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted.key, cell)`` pairs of a JSON object, skipping what is not a cell
    (the per-epoch ``history`` is drawn as curves instead)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                yield from flatten(value, name + ".")
            elif key != "history" and is_cell(value):
                yield name, value
    elif is_cell(obj):
        yield prefix.rstrip(".") or "value", obj


def records(obj: Any) -> Iterator[tuple[str, list[dict]]]:
    """Top-level lists of flat records (the per-point NUTS comparison of ``analyze``),
    shown as tables with one row per record."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key != "history" and isinstance(value, list) and value:
                if all(isinstance(v, dict) for v in value):
                    yield key, value


def record_table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k, v in row.items() if is_cell(v)))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            num = isinstance(v, int | float) and not isinstance(v, bool)
            cls = ' class="num"' if num else ""
            cells.append(f"<td{cls}>{html.escape(fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(body) + "\n</table>"


def table(obj: Any) -> str:
    rows = []
    for key, value, stderr in with_errors(list(flatten(obj))):
        cls = (
            ' class="num"' if isinstance(value, int | float) and not isinstance(value, bool) else ""
        )
        text = html.escape(cell(value, stderr))
        rows.append(f"<tr><th>{html.escape(key)}</th><td{cls}>{text}</td></tr>")
    return "<table>\n" + "\n".join(rows) + "\n</table>" if rows else "<p>(no scalar values)</p>"


def figures(run_dir: Path) -> list[Path]:
    """Every PNG the run wrote in the run directory and in ``analysis/``: known figures
    first, in :data:`CAPTIONS` order, then the rest sorted by path."""
    run = RunDir(run_dir)
    found = [
        p
        for p in sorted(run_dir.glob("*.png")) + sorted((run_dir / "analysis").glob("*.png"))
        if run.embeddable(p.relative_to(run_dir).as_posix())
    ]
    order = list(CAPTIONS)

    def key(p: Path) -> tuple[int, str]:
        rel = p.relative_to(run_dir).as_posix()
        return (order.index(rel) if rel in order else len(order), rel)

    return sorted(found, key=key)


#: The largest figure embedded in a report (a run's figures are a few hundred KiB).
FIGURE_LIMIT = 64 * 2**20


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk, or None when it is not a PNG."""
    if len(data) < 24 or not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    return struct.unpack(">II", data[16:24])


def figure_html(run_dir: Path, path: Path) -> str:
    """One ``<figure>``: small image grids are shown at twice their size (pixelated)."""
    rel = path.relative_to(run_dir).as_posix()
    caption = CAPTIONS.get(rel, rel)
    try:
        data = RunDir(run_dir).read_bytes(rel, FIGURE_LIMIT)
    except UserError:
        return ""
    size = png_size(data)
    zoom = size is not None and size[0] < SMALL
    width = f' class="zoom" width="{2 * size[0]}"' if zoom else ""
    shown = (2 * size[0] if zoom else size[0]) if size is not None else None
    style = f' style="width: {shown}px"' if shown else ""  # the caption wraps to the image
    return (
        f'<figure{style}><img src="{data_uri(data)}"{width} alt="{html.escape(rel)}">'
        f"<figcaption>{html.escape(caption)} <code>{html.escape(rel)}</code></figcaption>"
        "</figure>"
    )


def summary_line(config: Any) -> str:
    """What was trained, in one line: model, its options, data, epochs and batch size."""
    if not isinstance(config, dict):
        return ""
    parts = [f"{config.get('model', '?')} on {config.get('data', '?')}"]
    args = config.get("model_args") or {}
    if isinstance(args, dict) and args:
        parts.append(", ".join(f"{k}={fmt(v)}" for k, v in args.items()))
    if config.get("binarize") not in (None, "none"):
        parts.append(f"binarize={config['binarize']}")
    train = config.get("train") or {}
    if isinstance(train, dict) and "epochs" in train:
        parts.append(f"{train['epochs']} epochs, batch {train.get('batch_size', '?')}")
    return " · ".join(parts)


def likelihood_label(label: str, source: dict) -> str:
    """``label`` with ``log p(x)`` naming what the record's likelihood is of
    (``log_likelihood_of`` of ``ppl-vae evaluate``: ``log p(x, y)``, ``log p(x | y)``)."""
    of = source.get("log_likelihood_of")
    if isinstance(of, str) and of and of != "x":
        return label.replace("log p(x)", f"log p({of})")
    return label


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def run_step(run_dir: Path, run: RunDir, metrics: Any = None) -> int | None:
    """The step the run has trained to: its checkpoint's (``checkpoint.json``), else the
    ``steps`` of ``metrics.json``; None when neither says."""
    body = own_record(run, "checkpoint.json")
    record = body.get("record") if isinstance(body, dict) else None
    step = record.get("step") if isinstance(record, dict) else None
    if not _is_count(step) and isinstance(metrics, dict):
        step = metrics.get("steps")
    return step if _is_count(step) else None


def stale_note(name: str, obj: Any, step: int | None) -> str | None:
    """For a record written from a checkpoint (:data:`FROM_CHECKPOINT`) that does not
    describe the run's checkpoint at ``step``: what it describes and what to run, e.g.
    ``(evaluated at step 90; the run has since trained to step 135 — run `ppl-vae
    evaluate` again)``; None when it is current, or when the run's step is unknown."""
    if name not in FROM_CHECKPOINT or not isinstance(obj, dict) or step is None:
        return None
    done, command = FROM_CHECKPOINT[name]
    at = obj.get("step")
    if not _is_count(at):  # written before records said which step
        return (
            f"({name} does not say which step it was {done} at, so it may describe an "
            f"older checkpoint; the run is at step {step} — run `{command}` again)"
        )
    if at == step:
        return None
    since = "has since trained to" if step > at else "holds a checkpoint of"
    return f"({done} at step {at}; the run {since} step {step} — run `{command}` again)"


def headline(*sources: Any, notes: tuple[str | None, ...] = ()) -> str:
    """The headline numbers as a row of cards; the first source with a key wins, and a
    standard error it holds beside the key is shown with it (``-104.2 ± 0.4``). ``notes``,
    one per source, replace the usual note of the cards taken from it (a stale record)."""
    cards = []
    for key, label, note in HEADLINE:
        i, source = next(
            ((i, s) for i, s in enumerate(sources) if isinstance(s, dict) and key in s), (0, {})
        )
        value = source.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if key.startswith("test_log_likelihood"):
            label = likelihood_label(label, source)
        stale = notes[i] if i < len(notes) else None
        shown = cell(value, stderr_of(source, key))
        cards.append(
            f'<div class="card"><div class="label">{html.escape(label)}</div>'
            f'<div class="value">{html.escape(shown)}</div>'
            f'<div class="note{" stale" if stale else ""}">{html.escape(stale or note)}</div>'
            "</div>"
        )
    return f'<div class="headline">{"".join(cards)}</div>' if cards else ""


def amortization(tables: dict[str, Any]) -> Any:
    """The amortisation-gap record of ``analyze`` (``analysis/report.json``), if any."""
    analysis = tables.get("analysis/report.json")
    return analysis.get("amortization") if isinstance(analysis, dict) else None


def render(run_dir: str | Path) -> str:
    """The report page of ``run_dir`` as an HTML string."""
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    config = own_record(run, "config.json")
    metrics = own_record(run, "metrics.json")
    title = f"ppl-vae run: {run_dir.resolve().name}"
    if isinstance(config, dict):
        title += f" ({config.get('model', '?')} on {config.get('data', '?')})"
    tables = {
        name: metrics if name == "metrics.json" else own_record(run, name) for name, _ in TABLES
    }
    step = run_step(run_dir, run, metrics)
    stale = {name: stale_note(name, tables[name], step) for name in FROM_CHECKPOINT}
    # A stale evaluation gives way to metrics.json (the weights the run holds) where both
    # have a figure; what only it has is shown with its note.
    sources = [
        (tables["evaluation.json"], stale["evaluation.json"]),
        (metrics, None),
        (amortization(tables), stale["analysis/report.json"]),
    ]
    if stale["evaluation.json"]:
        sources = [sources[1], sources[0], sources[2]]
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="what">{html.escape(summary_line(config))} '
        f"<code>{html.escape(str(run_dir))}</code></p>",
        headline(*(s for s, _ in sources), notes=tuple(n for _, n in sources)),
    ]
    pngs = figures(run_dir)
    figs = [figure_html(run_dir, p) for p in pngs] or ["<p>(no figures in this run)</p>"]
    parts += ["<h2>Figures</h2>", '<div class="figures">', *figs, "</div>"]
    for name, heading in TABLES:
        obj = tables[name]
        if obj is not None:
            parts.append(f"<h2>{html.escape(heading)}</h2>")
            if stale.get(name):
                parts.append(f'<p class="stale">{html.escape(stale[name])}</p>')
            parts.append(table(obj))
            for key, rows in records(obj):
                parts += [
                    f"<h3>{html.escape(key)}</h3>",
                    f'<div class="wide">{record_table(rows)}</div>',
                ]
    if config is not None:
        parts += [
            f"<details><summary>Configuration ({sum(1 for _ in flatten(config))} settings, "
            "config.json)</summary>",
            table(config),
            "</details>",
        ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )


def write_report(run_dir: str | Path | RunDir) -> Path:
    """Write ``run_dir/report.html`` (under the run's lock) and return its path."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    run.manifest()  # a manifest that cannot be read is its own one-line error
    if not any(run.is_own_regular_file(name) for name in ("config.json", "metrics.json")):
        raise UserError(
            f"{run.path} is not a run directory (no config.json or metrics.json that "
            "ppl-vae wrote); name a folder `ppl-vae train --out` made"
        )
    with run.lock():
        return run.write_text(REPORT, render(run.path))


def refresh(run_dir: str | Path | RunDir) -> Path | None:
    """Rewrite the report of a run that has one, so it shows results added since
    (``evaluation.json``, ``analysis/``); returns its path, or None without a report."""
    path = (run_dir.path if isinstance(run_dir, RunDir) else Path(run_dir)) / REPORT
    return write_report(run_dir) if path.is_file() else None
