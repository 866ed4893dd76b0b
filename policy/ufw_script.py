"""What a shell script does to ufw: its incoming default, whether it ends enabled, and every
incoming allow rule (ufw's simple and full syntax), read without running it.

Used by policy/checks.py on every text that sets a host's firewall: a remote
Command's script and the firewall guard's staged copy.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import shlex
from dataclasses import dataclass
from typing import Optional

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PortRange = tuple[int, int]

# ufw verbs after which the host's firewall is no longer what it was.
_CHANGING_VERBS = {
    "allow", "limit", "deny", "reject", "delete", "insert", "prepend", "route", "default", "enable", "disable", "reset",
}
_SEPARATORS = {";", ";;", "&&", "||", "|", "&", "(", ")"}


@dataclass(frozen=True)
class AllowRule:
    """An incoming `ufw allow`/`limit` rule: from `source` to `ports` (None: every port)."""

    source: str  # as written: an address, a network, or "any"
    ports: Optional[tuple[PortRange, ...]]
    command: str

    @property
    def network(self) -> Optional[Network]:
        try:
            return ipaddress.ip_network("0.0.0.0/0" if self.source == "any" else self.source, strict=False)
        except ValueError:
            return None

    @property
    def from_anywhere(self) -> bool:
        return self.network is None or self.network.prefixlen == 0  # unreadable counts as anywhere

    def opens(self, low: int, high: int) -> bool:
        return self.ports is None or any(first <= high and low <= last for first, last in self.ports)


@dataclass
class UfwIntent:
    """What a shell script does to ufw, in order: the last word on each setting wins."""

    incoming_default: Optional[str] = None
    enabled: bool = False
    allows: list[AllowRule] = dataclasses.field(default_factory=list)


def _port_ranges(spec: str) -> Optional[tuple[PortRange, ...]]:
    """`22`, `6380:6383`, `80,443/tcp` -> ranges; a service or app name -> None (every port)."""
    ranges = []
    for part in spec.split("/", 1)[0].split(","):
        first, _, last = part.partition(":")
        if not (first.isdigit() and (last or first).isdigit()):
            return None
        ranges.append((int(first), int(last or first)))
    return tuple(ranges)


def _allow_rule(words: list[str], command: str) -> Optional[AllowRule]:
    """Parse the words after `allow`/`limit` (ufw's simple and full syntax); None if outgoing."""
    source, ports, side, i = "any", None, None, 0
    while i < len(words):
        word = words[i]
        if word == "out":
            return None
        if word in ("in", "log", "log-all"):
            i += 1
        elif word in ("on", "proto", "comment"):
            i += 2
        elif word in ("from", "to"):
            side = word
            if word == "from":
                source = words[i + 1] if i + 1 < len(words) else "any"
            i += 2
        elif word in ("port", "app"):
            if side != "from":  # a source port does not limit what is reachable
                ports = _port_ranges(words[i + 1]) if word == "port" and i + 1 < len(words) else None
            i += 2
        else:  # simple syntax: `ufw allow 8265/tcp`
            ports = _port_ranges(word)
            i += 1
    return AllowRule(source, ports, command)


def _ufw_commands(script: str) -> list[list[str]]:
    """Every simple command on a line of the script that names ufw, as words.

    Only those lines are lexed (lines the lexer cannot read are skipped): a
    command that has no `ufw` word cannot change the firewall, and the other
    lines (file payloads, programs) are most of what a Command carries.
    """
    commands: list[list[str]] = []
    for line in script.splitlines():
        if "ufw" not in line:
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError:
            continue  # a line inside a multi-line quoted string
        current: list[str] = []
        for token in tokens + [";"]:
            if token in _SEPARATORS:
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
    return commands


def ufw_intent(script: str) -> Optional[UfwIntent]:
    """What `script` does to ufw; None when it never changes ufw (not a firewall script)."""
    intent, changes = UfwIntent(), False
    for words in _ufw_commands(script):
        at = next((i for i, w in enumerate(words) if w.rsplit("/", 1)[-1] == "ufw"), None)
        if at is None:
            continue
        args = [w for w in words[at + 1 :] if not w.startswith("--")]
        if not args or args[0] not in _CHANGING_VERBS:
            continue
        changes = True
        verb = args[0]
        if verb == "default" and len(args) > 1:
            if (args[2] if len(args) > 2 else "incoming") == "incoming":
                intent.incoming_default = args[1]
        elif verb in ("enable", "disable", "reset"):
            intent.enabled = verb == "enable"
            if verb == "reset":
                intent.allows.clear()
        else:
            rest = args[2:] if verb == "insert" else args[1:] if verb in ("prepend", "route") else args
            if rest and rest[0] in ("allow", "limit"):
                rule = _allow_rule(rest[1:], shlex.join(words[at:]))
                if rule is not None:
                    intent.allows.append(rule)
    return intent if changes else None
