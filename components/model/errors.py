"""How a bad stack config is reported: every problem, each naming its key and the rule."""
from __future__ import annotations

from typing import NamedTuple

NAMESPACE = "ray-cluster"


class Problem(NamedTuple):
    key: str
    rule: str


class ConfigError(ValueError):
    """Every problem in a stack's config, each naming its key and the rule."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  {NAMESPACE}:{p.key}: {p.rule}" for p in problems)
        super().__init__(f"invalid stack config ({len(problems)} problem(s)):\n{lines}")
