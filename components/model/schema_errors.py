"""pydantic's validation errors, said as a person fixes them: the stack key (nodes by name) and the rule."""
from __future__ import annotations

import difflib
import typing
from typing import Any, Optional

import pydantic
from pydantic import BaseModel

from components.model.errors import Problem
from components.model.fields import MAX_DISK_GB, MAX_MEMORY_GB, MAX_VCPU

# Why an upper bound is where it is, for the keys that have one.
_LIMITS = {
    "vcpu": f"vSphere 8 gives a VM at most {MAX_VCPU} vCPUs",
    "memoryGb": f"vSphere 8 gives a VM at most {MAX_MEMORY_GB} GB of memory",
    "diskGb": f"a vSphere virtual disk holds at most {MAX_DISK_GB} GB (62 TB)",
    "objectStoreFraction": "a fraction of the VM's memory, like 0.3; Ray and the tasks need the rest",
}
# pydantic's own words, where plainer ones help.
_PLAIN = {
    "missing": "required, but not set",
    "float_parsing": "must be a number, like 0.3",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping of keys (key: value lines), not a single value",
    "list_type": "must be a list, like [a, b] or one `- item` per line",
    "string_type": "must be text",
    "ip_v4_address": "{value!r} is not an IPv4 address like 10.20.0.11",
    "datetime_from_date_parsing": "is not an ISO 8601 instant like 2026-11-22T22:00:00+01:00",
}


def schema_problems(error: pydantic.ValidationError, raw: Any, root: type[BaseModel]) -> list[Problem]:
    problems: list[Problem] = []
    for e in error.errors():
        key = config_key(e["loc"], raw)
        if e["type"] == "extra_forbidden":
            rule = "unknown key" + _suggestion(e["loc"], root)
        elif e["type"] in ("less_than_equal", "less_than") and str(e["loc"][-1]) in _LIMITS:
            rule = f"{e['input']} is too much: at most {e['ctx'].get('le', e['ctx'].get('lt'))} ({_LIMITS[str(e['loc'][-1])]})"
        elif "{value" in _PLAIN.get(e["type"], ""):
            rule = _PLAIN[e["type"]].format(value=e["input"])
        elif e["type"] in _PLAIN:
            rule = _PLAIN[e["type"]] + _got(e)
        else:
            rule = e["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
        problem = Problem(key, rule)
        if problem not in problems:
            problems.append(problem)
    # A key reported missing next to the misspelling that meant it: the misspelling says it all.
    meant = {p.key.rsplit(".", 1)[0] + "." + p.rule.split("did you mean ")[1].rstrip("?") for p in problems if "did you mean " in p.rule}
    return [p for p in problems if not (p.rule == _PLAIN["missing"] and p.key in meant)]


def _got(e: typing.Mapping[str, Any]) -> str:
    value = e.get("input")
    return "" if e["type"] == "missing" or isinstance(value, (dict, list)) else f" (got {value!r})"


def config_key(loc: tuple, raw: Any) -> str:
    """A pydantic location as the stack key, a node by its name: tiers.heavy-compute.nodes[ray-hc-2].ip."""
    key, here = "", raw
    for part in loc:
        if isinstance(part, int):
            item = here[part] if isinstance(here, list) and part < len(here) else None
            name = item.get("name") if isinstance(item, dict) else None
            key += f"[{name}]" if isinstance(name, str) and name else f"[{part}]"
            here = item
        elif part in ("always", "window") or part.startswith(("literal[", "function-", "ip_v4", "json-or-python")):
            continue  # pydantic's branch names are not config keys
        else:
            key += f".{part}" if key else str(part)
            here = here.get(part) if isinstance(here, dict) else None
    return key


def _suggestion(loc: tuple, root: type[BaseModel]) -> str:
    """', did you mean memoryGb?' for a key that is close to one the section knows."""
    known = _known_keys(loc[:-1], root)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if close:
        return f": did you mean {close[0]}?"
    return f" (a typo?): this section knows {', '.join(known)}" if known else " (a typo?)"


def _known_keys(loc: tuple, model: Any) -> list[str]:
    """The keys of the config section at `loc` (names and list indexes walked through the model)."""
    for part in loc:
        model = _unwrap(model)
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = next((fi for fi in model.model_fields.values() if fi.alias == part), None)
            if field is None:
                return []
            model = field.annotation
        else:  # a dict value or a list item
            args = [a for a in typing.get_args(model) if a is not type(None)]
            model = args[-1] if args else None
    model = _unwrap(model)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [fi.alias for fi in model.model_fields.values() if fi.alias]
    return []


def _unwrap(annotation: Any) -> Optional[Any]:
    """The model inside Optional[...] / Annotated[...], if one."""
    while typing.get_origin(annotation) in (typing.Union, typing.Annotated):
        models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        if models:
            return models[0]
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if args else None
    return annotation
