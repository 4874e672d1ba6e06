# ppl-vae: makes utils/ (Pyro's examples/vae/utils, custom_mlp.py only) a package
