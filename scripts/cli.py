"""What every command line shares: one wording of a bad instant, one way out on a bad stack config,
one way to take the command a wrapper runs."""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Optional, Sequence

from components.model.errors import CONFIG_ERROR_EXIT, ConfigError
from components.model.schedule import parse_instant


def instant(text: str) -> dt.datetime:
    """argparse type: an ISO 8601 instant with offset (argparse exits 2 with the message)."""
    try:
        return parse_instant(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def config_error_exit(error: ConfigError) -> int:
    """Print every problem, no traceback; the exit code every tool uses for a bad config."""
    print(error, file=sys.stderr)
    return CONFIG_ERROR_EXIT


def parse_with_command(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> tuple[argparse.Namespace, list[str]]:
    """A wrapper's options, and the command it runs: everything after `--` (argparse exits 2 without one)."""
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    return args, command
