from vqagraph.eval.bridge_training.cli import main

raise SystemExit(main())
