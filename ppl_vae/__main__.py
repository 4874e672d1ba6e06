from ppl_vae.cli import main

raise SystemExit(main())
