"""Shared command-line plumbing for the scripts in train/ and eval/."""

from __future__ import annotations

import sys
from typing import Callable

from .errors import CascadeError


def run_cli(main: Callable[[], None]) -> None:
    """Run a script's main; a user error prints one line (`error: ...`) and exits with status 2."""
    try:
        main()
    except CascadeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
