"""``python -m tks`` runs the command-line interface."""

import sys

from tks.cli import main

sys.exit(main())
