from vqagraph.lab.qformer.cli import main

raise SystemExit(main())
