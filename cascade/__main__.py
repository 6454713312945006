"""`python -m cascade COMMAND ...`: the command line (cascade.cli, one module per command)."""

from .cli import main
from .cli.common import run_cli

if __name__ == "__main__":
    run_cli(main)
