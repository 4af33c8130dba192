"""`python -m xlm_flax` runs the command line (same as `xlm-flax`)."""

import sys

from xlm_flax.cli.main import main

sys.exit(main())
