"""What every command line shares: one wording of a bad instant, one way out on a bad stack config."""
from __future__ import annotations

import argparse
import datetime as dt
import sys

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
