"""Whole-pipeline backlog benchmark; same as `streamflow bench e2e` (see README.md here)."""

import sys

from streamflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "e2e", *sys.argv[1:]]))
