from ppl_vae.cli import main
from ppl_vae.infer import distributed

# Under torchrun (WORLD_SIZE > 1) each process joins one process group
# (see ppl_vae.infer.distributed).
raise SystemExit(distributed.launch(main))
