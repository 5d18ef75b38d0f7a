"""``python -m streamflow.cli``: what the worker supervisor spawns for each stage process."""

import sys

from streamflow.cli import main

sys.exit(main())
