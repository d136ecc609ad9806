import sys

from vqagraph.agents.cli import main

sys.exit(main())
