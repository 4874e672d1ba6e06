from ppl_vae import distributed
from ppl_vae.cli import main

# Under torchrun (WORLD_SIZE > 1) each process joins one process group: see ppl_vae.distributed.
raise SystemExit(distributed.launch(main))
