"""Run any artdate command: `python launch.py <command> [options]` (same as `artdate <command>`)."""

import sys

from artdate.cli import main

if __name__ == "__main__":
    sys.exit(main())
