"""`python -m vqagraph.lab.text_route [--quick] [--out DIR] [--seed S]`: the same as `vqagraph world train`."""

from vqagraph.lab.text_route.cli import main

raise SystemExit(main())
