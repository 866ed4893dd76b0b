"""How a bad stack config is reported: every problem, each naming its key and the rule."""
from __future__ import annotations

from typing import NamedTuple

NAMESPACE = "ray-cluster"
# The exit code of every command-line tool when the stack config is bad (README, "Exit codes").
CONFIG_ERROR_EXIT = 2


class Problem(NamedTuple):
    key: str  # a `ray-cluster:` key path like tiers.heavy-compute.nodes[ray-hc-2].ip; "" for the file itself
    rule: str

    def line(self) -> str:
        return f"{NAMESPACE}:{self.key}: {self.rule}" if self.key else self.rule


class ConfigError(ValueError):
    """Every problem in a stack's config, each naming its key and the rule."""

    def __init__(self, problems: list[Problem], source: str = "stack config"):
        self.problems = problems
        lines = "\n".join(f"  {p.line()}" for p in problems)
        super().__init__(f"invalid {source} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n{lines}")
