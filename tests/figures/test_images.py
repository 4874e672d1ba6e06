"""Figures: every plotting function writes a valid PNG of the size its geometry implies,
the latent grids put the codes where the docstrings say, and the matplotlib figures draw
what they claim (axes, titles, lines with their data and labels, legends, notes): a blank
figure of the right size fails."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.layout_engine import PlaceHolderLayoutEngine
from PIL import Image

from ppl_vae.figures import curves
from ppl_vae.figures import images as plots
from ppl_vae.figures import latent as latent_plots

SHAPE = (8, 8)  # digits: enlarged x4 to 32 x 32 by plots.as_images
TILE = 32


def grid_size(n: int, nrow: int, tile: int = TILE, pad: int = 2) -> tuple[int, int]:
    """(width, height) of torchvision's make_grid of ``n`` square tiles, ``nrow`` per row."""
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    return cols * (tile + pad) + pad, rows * (tile + pad) + pad


def png(path) -> Image.Image:
    im = Image.open(path)
    im.verify()  # a truncated or corrupt file raises here
    im = Image.open(path)
    assert im.format == "PNG"
    return im


class Recorder:
    """A decode callable that remembers its codes; pixel brightness follows ``z[dim]``."""

    def __init__(self, dim: int = 0):
        self.dim, self.calls = dim, []

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.calls.append(z.clone())
        return torch.sigmoid(2 * z[:, self.dim : self.dim + 1]).expand(-1, 64)


def tile_mean(im: Image.Image, row: int, col: int) -> float:
    a = np.asarray(im.convert("L"), dtype=float)
    top, left = 2 + row * (TILE + 2), 2 + col * (TILE + 2)
    return float(a[top : top + TILE, left : left + TILE].mean())


def test_image_grid_and_reconstructions_sizes(tmp_path):
    assert png(plots.image_grid(torch.rand(20, 64), SHAPE, tmp_path / "g.png")).size == (
        grid_size(20, 8)
    )
    x = torch.rand(20, 64)
    im = png(plots.reconstructions(x, x, SHAPE, tmp_path / "r.png"))
    assert im.size == grid_size(40, 16)  # rows of 16 inputs over 16 outputs, then 4 over 4


@pytest.mark.parametrize("n, nrow, shape", [(2, 8, SHAPE), (20, 8, SHAPE), (7, 3, (3, 5, 4))])
def test_grids_are_torchvisions_pixel_for_pixel(tmp_path, n, nrow, shape):
    """The grid and the PNG torchvision's make_grid/save_image give (grey drawn as grey)."""
    from torchvision.utils import make_grid, save_image

    rows = torch.rand(n, math.prod(shape))
    images = plots.as_images(rows, shape)
    grid = plots.make_grid(images, nrow=nrow)
    want = make_grid(images, nrow=nrow, padding=2, pad_value=1.0)
    assert torch.equal(grid.expand(3, -1, -1), want)
    save_image(images, tmp_path / "tv.png", nrow=nrow, padding=2, pad_value=1.0)
    ours = png(plots.image_grid(rows, shape, tmp_path / "ours.png", nrow=nrow))
    assert ours.mode == ("L" if images.shape[1] == 1 else "RGB")
    assert np.array_equal(np.asarray(ours.convert("RGB")), np.asarray(png(tmp_path / "tv.png")))


def test_prior_quantiles_are_normal_icdf_of_even_probabilities():
    q = plots.prior_quantiles(5)
    expected = torch.distributions.Normal(0.0, 1.0).icdf(
        torch.tensor([0.05, 0.275, 0.5, 0.725, 0.95])
    )
    assert torch.allclose(q, expected, atol=1e-5)
    assert torch.allclose(
        plots.prior_quantiles(3, icdf=lambda p: 10 * p), torch.tensor([0.5, 5, 9.5])
    )


@pytest.mark.parametrize("dim", [0, 1])
def test_latent_manifold_size_and_orientation(tmp_path, dim):
    decode = Recorder(dim)
    im = png(plots.latent_manifold(decode, 2, SHAPE, tmp_path / "m.png", n=6))
    assert im.size == grid_size(36, 6)
    (z,) = decode.calls
    q = plots.prior_quantiles(6)
    assert torch.allclose(z[:6, 0], q) and torch.allclose(z[::6, 1], q.flip(0))
    corners = [tile_mean(im, 0, 0), tile_mean(im, 0, 5), tile_mean(im, 5, 0)]
    if dim == 0:  # z[0] grows to the right
        assert corners[1] > corners[0] + 100
    else:  # z[1] is highest on the top row
        assert corners[0] > corners[2] + 100


def test_latent_manifold_in_more_dimensions_and_in_one(tmp_path):
    decode = Recorder()
    plots.latent_manifold(decode, 5, SHAPE, tmp_path / "m5.png", n=4, dims=(1, 3))
    z = decode.calls[-1]
    assert z.shape == (16, 5)
    assert (z[:, [0, 2, 4]] == 0).all() and z[:, 1].unique().numel() == 4
    im = png(plots.latent_manifold(decode, 1, SHAPE, tmp_path / "m1.png", n=7))
    assert im.size == grid_size(7, 7)  # a 1-D latent: one row


@pytest.mark.parametrize("frame", [True, False])
def test_interpolation(tmp_path, frame):
    decode = Recorder()
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    xs = dict(x_start=torch.rand(3, 64), x_end=torch.rand(3, 64)) if frame else {}
    im = png(plots.interpolation(decode, a, b, SHAPE, tmp_path / "i.png", steps=5, **xs))
    cols = 7 if frame else 5
    assert im.size == grid_size(3 * cols, cols)
    z = decode.calls[0].reshape(3, 5, 4)
    assert torch.allclose(z[:, 0], a) and torch.allclose(z[:, -1], b)
    assert torch.allclose(z[:, 2], (a + b) / 2, atol=1e-6)


def test_traversals_vary_one_dimension_per_row(tmp_path):
    decode = Recorder()
    base = torch.tensor([0.3, -0.2, 0.7])
    im = png(plots.traversals(decode, base, SHAPE, tmp_path / "t.png", dims=[2, 0], n=9))
    assert im.size == grid_size(18, 9)
    z = decode.calls[0].reshape(2, 9, 3)
    assert torch.allclose(z[0, :, 2], plots.prior_quantiles(9))
    assert torch.allclose(z[0, :, :2], base[:2].expand(9, 2))
    assert torch.allclose(z[1, :, 0], plots.prior_quantiles(9))
    assert torch.allclose(z[1, :, 1:], base[1:].expand(9, 2))


def scatter_size() -> tuple[int, int]:
    w, h = latent_plots.SCATTER_SIZE
    return round(w * latent_plots.DPI), round(h * latent_plots.DPI)


@pytest.mark.parametrize(
    "d, labels, kl",
    [
        (2, torch.arange(200) % 10, None),
        (5, np.arange(200) % 3, [0.1, 3.0, 0.0, 2.0, 0.5]),
        (5, None, None),  # PCA
        (1, torch.arange(200) % 10, None),
        (3, torch.arange(200), None),  # too many labels for a legend: a colour bar
    ],
)
def test_latent_scatter_writes_a_figure_of_figsize_times_dpi(tmp_path, d, labels, kl):
    im = png(latent_plots.latent_scatter(torch.randn(200, d), tmp_path / "s.png", labels, kl))
    assert im.size == scatter_size()


def test_projection_picks_the_largest_kl_dimensions_else_principal_components():
    z = torch.randn(500, 4) * torch.tensor([0.1, 5.0, 1.0, 0.2])
    xy, labels = latent_plots.project_2d(z, kl_per_dim=[1.0, 0.0, 0.5, 2.0])
    assert np.allclose(xy, z[:, [3, 0]].numpy()) and "z[3]" in labels[0]
    xy, labels = latent_plots.project_2d(z)  # PCA: the first axis carries the spread of z[1]
    assert labels[0].startswith("PC 1") and xy[:, 0].var() > 10 * xy[:, 1].var()
    assert abs(np.corrcoef(xy[:, 0], z[:, 1].numpy())[0, 1]) > 0.99


def history(n: int, prior: bool = True) -> list[dict]:
    """Records with every key :func:`ppl_vae.measure.metrics.epoch_record` writes that
    curves plot."""
    return [
        {
            "epoch": i + 1,
            "beta": min(1.0, 0.1 * (i + 1)),
            "train_objective": 30.0 - i,
            "train_elbo": -30.0 + i,
            "train_rate": 2.5 + 0.1 * i if prior else None,
            "train_distortion": 27.5 - i,
            "test_elbo": -31.0 + i,
            "rate": 2.0 + 0.1 * i if prior else None,
            "distortion": 28.0 - i,
            "active_units": 2 if prior else None,
        }
        for i in range(n)
    ]


def drawn(ax) -> dict[str, list[float]]:
    """The lines of an axes: legend label to y data."""
    return {line.get_label(): list(line.get_ydata()) for line in ax.lines}


def panel(fig, title_start: str):
    (ax,) = [ax for ax in fig.axes if ax.get_title().startswith(title_start)]
    return ax


def test_training_curves_draw_every_quantity_the_trainer_records():
    records = history(4)
    fig = curves.curves_figure(records)
    assert len(fig.axes) == 6
    assert [ax.get_title().split(" ")[0] for ax in fig.axes] == [
        "ELBO", "rate:", "distortion:", "beta", "training", "active",
    ]  # fmt: skip
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)
    for ax in fig.axes:
        for line in ax.lines:
            assert list(line.get_xdata()) == [1, 2, 3, 4]
    col = {k: [r[k] for r in records] for k in records[0]}
    assert drawn(panel(fig, "ELBO")) == {"train": col["train_elbo"], "test": col["test_elbo"]}
    # train_rate and train_distortion are written by the trainer every epoch: both drawn
    assert drawn(panel(fig, "rate")) == {"train": col["train_rate"], "test": col["rate"]}
    assert drawn(panel(fig, "distortion")) == {
        "train": col["train_distortion"],
        "test": col["distortion"],
    }
    assert drawn(panel(fig, "beta")) == {"beta": col["beta"]}
    assert drawn(panel(fig, "training loss")) == {"train": col["train_objective"]}
    assert drawn(panel(fig, "active units")) == {"test": [2.0] * 4}
    for title in ("ELBO", "rate", "distortion"):  # two lines: a legend names them
        legend = panel(fig, title).get_legend()
        assert [t.get_text() for t in legend.get_texts()] == ["train", "test"]
    assert not any(ax.texts for ax in fig.axes)  # no "not recorded" notes


def test_training_curves_note_what_a_model_without_a_prior_does_not_record():
    fig = curves.curves_figure(history(3, prior=False))
    for title in ("rate", "active units"):
        ax = panel(fig, title)
        assert not ax.lines and "not recorded" in ax.texts[0].get_text()
    assert set(drawn(panel(fig, "distortion"))) == {"train", "test"}
    empty = curves.curves_figure([])
    assert len(empty.axes) == 6 and not any(ax.lines for ax in empty.axes)
    assert all(ax.texts[0].get_text() == "no history" for ax in empty.axes)


FIGURES = {
    "curves": lambda: curves.curves_figure(history(4)),
    "scatter": lambda: latent_plots.scatter_figure(
        torch.linspace(-2, 2, 150).reshape(50, 3).sin(), torch.arange(50) % 4
    ),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figures_are_laid_out_once_and_saved_with_one_draw(tmp_path, name):
    """What tight_layout gives, pixel for pixel; saving draws the figure once, not twice
    (matplotlib draws again first while any layout engine is set)."""
    fig, draws = FIGURES[name](), []
    assert fig.get_layout_engine() is None
    fig.draw = lambda renderer: draws.append(type(fig).draw(fig, renderer))
    ours = png(curves.save_figure(fig, tmp_path / "new.png"))
    assert len(draws) == 1
    old = FIGURES[name]()  # as the figures were saved before: tight_layout's placeholder set
    old.set_layout_engine(PlaceHolderLayoutEngine(adjust_compatible=True, colorbar_gridspec=True))
    want = png(curves.save_figure(old, tmp_path / "old.png"))
    assert np.array_equal(np.asarray(ours), np.asarray(want))


def test_training_curves_on_a_real_history(digits):
    from ppl_vae.models.vae import VAE

    from ppl_vae.infer.config import TrainConfig
    from ppl_vae.infer.trainer import fit

    vae = VAE(digits.x_dim, latent_dim=2, hidden=(16,))
    records = fit(vae.model, vae.guide, digits, TrainConfig(epochs=2, progress=False)).history
    fig = curves.curves_figure(records)
    for title in ("ELBO", "rate", "distortion"):  # every panel with its train and test line
        lines = drawn(panel(fig, title))
        assert set(lines) == {"train", "test"} and all(len(v) == 2 for v in lines.values())
        assert all(math.isfinite(v) for ys in lines.values() for v in ys)


def test_latent_scatter_draws_one_group_per_label_with_a_legend():
    z = torch.randn(200, 2)
    fig = latent_plots.scatter_figure(z, torch.arange(200) % 10, title="codes")
    (ax,) = fig.axes
    assert ax.get_title() == "codes" and (ax.get_xlabel(), ax.get_ylabel()) == ("z[0]", "z[1]")
    assert len(ax.collections) == 10
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [str(i) for i in range(10)]
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    assert points.shape == (200, 2)
    assert np.allclose(np.sort(points[:, 0]), np.sort(z[:, 0].numpy()), atol=1e-6)


def test_latent_scatter_many_labels_get_a_colour_bar_and_projections_name_their_axes():
    fig = latent_plots.scatter_figure(torch.randn(200, 3), torch.arange(200))
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "label"  # the colour bar
    fig = latent_plots.scatter_figure(torch.randn(50, 5), kl_per_dim=[0.1, 3.0, 0.0, 2.0, 0.5])
    (ax,) = fig.axes
    assert ax.get_xlabel().startswith("z[1]") and ax.get_ylabel().startswith("z[3]")
    assert ax.get_legend() is None and len(ax.collections) == 1


@pytest.mark.parametrize("records", [history(5), history(1), history(3, prior=False), []])
def test_training_curves(tmp_path, records):
    im = png(curves.training_curves(records, tmp_path / "c.png"))
    w, h = curves.CURVES_SIZE
    assert im.size == (round(w * curves.DPI), round(h * curves.DPI))


def test_series_turns_none_into_nan():
    assert curves.series(history(2, prior=False), "distortion") == [28.0, 27.0]
    assert all(math.isnan(v) for v in curves.series(history(2, prior=False), "rate"))


def test_labelled_rows_adds_a_label_column_to_the_grid(tmp_path, digits):
    x = digits.x_test[:10]
    path = plots.labelled_rows([x, x, x], ["input", "vae", "ae"], (8, 8), tmp_path / "r.png")
    with Image.open(path) as img:
        assert img.size == (10 * 34 + 2 + 120, 3 * 34 + 2)
        # The image cells sit right of the label column: the first cell's gutter is white.
        assert img.convert("L").getpixel((120, 1)) == 255
