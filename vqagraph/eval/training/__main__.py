"""`python -m vqagraph.eval.training [--quick] [--out DIR] [--seed S]`: the same as `vqagraph world train`."""

from vqagraph.eval.training.cli import main

raise SystemExit(main())
