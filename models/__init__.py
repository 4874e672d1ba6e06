"""The suite: one Pyro program per file. ``ppl_vae.registry`` finds them by file name."""
