import os

from ppl_vae.cli import main

# Under torchrun (WORLD_SIZE > 1) each process joins one process group (see
# ppl_vae.infer.distributed); a plain `python -m ppl_vae --help` imports no torch.
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    from ppl_vae.infer import distributed

    raise SystemExit(distributed.launch(main))
raise SystemExit(main())
