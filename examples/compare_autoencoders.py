"""Compare the suite's autoencoders from Python: the same data, split and training budget
for every model, one table and one figure.

Deterministic autoencoders (``ae``, ``tanh-ae``, ``pca``, ``denoising-ae``) are the same
Pyro programs as the VAE with a point-mass guide :math:`q(z|x) = \\delta(z - f(x))`;
``sparse-ae`` keeps a Laplace prior (an L1 penalty); ``vae`` and ``ppca`` have Gaussian
guides and report an ELBO.

Run it (a few seconds per model on digits)::

    python examples/compare_autoencoders.py [OUT_DIR]

It writes ``OUT_DIR/<model>/`` run directories plus ``comparison.csv``,
``comparison.md`` and ``comparison.png`` (default ``OUT_DIR``: a fresh temporary folder).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from ppl_vae.infer.config import TrainConfig
from ppl_vae.runs.compare import compare, table
from ppl_vae.runs.config import DEFAULT_MODELS, RunConfig


def main(out: Path, epochs: int = 5) -> None:
    base = RunConfig(
        data="digits", train=TrainConfig(epochs=epochs, batch_size=128, lr=3e-3, progress=False)
    )
    result = compare(base, DEFAULT_MODELS, out, latent_dim=8, overwrite=True)
    print(table(result.rows))
    best = min(result.rows, key=lambda row: row["test_recon_mse"])
    print(f"\nlowest test reconstruction error: {best['model']} ({best['test_recon_mse']:.3f})")
    for name, run in result.runs.items():  # each run holds its trained program pair
        pair = run.pair
        print(
            f"{name}: latent sites {', '.join(pair.latent_sites)}, guide a point mass: "
            f"{pair.point_mass}"
        )
    print(f"table, runs and figure in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="compare-")))
