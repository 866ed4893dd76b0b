"""A small model of how the Pulumi engine orders deletes and replacements, and of how
our providers diff, so the program's real graph (registered under mocks) can be run
through an upgrade, a template rebuild or a removal before anyone runs it on vCenter.

Pulumi's mocks accept any option, order nothing and diff nothing. The rules below are
read from the engine's and the providers' source; each cites where. Engine: pulumi/pulumi
at 1b5949891b3c (2026-08-21), pkg/resource/deploy/step_generator.go unless named.

  E1 diff(): a resource is replaced when it is targeted (`--replace`), when a resource
     in its `replace_with` is being replaced, when its `deleted_with` resource is being
     replaced, or when its provider is replaced; otherwise the provider's Diff decides.
  E2 ignore_changes paths keep their old values before the provider diffs
     (pkg/resource/deploy/step_generator.go processIgnoreChanges via diffResource), and a
     change under a `replace_on_changes` path replaces (applyReplaceOnChanges: a detailed-diff
     path the replace_on_changes path Contains, so `disks[1]` is that list element only).
  E3 An input that depends on a replaced resource's output is unknown, so it changes
     (the replacement has a new id): calculateDependentReplacements substitutes
     MakeComputed for it; at registration the new output differs.
  E4 A delete-before-replace of X first deletes, in reverse dependency order, the
     dependents that must be replaced too (calculateDependentReplacements: a dependent
     counts when its provider or its deleted_with resource is in the replace set, or
     when an input property depends on the set and its provider's Diff then says
     replace; a plain depends_on edge never counts), then the resources whose
     replace_with or deleted_with names X (findDependentCascadeReplacements, one level),
     then X; then X is created. Resources already operated on in this deployment are
     not walked (impossibleDependents).
  E5 A resource deleted by E4 whose registration comes later is re-created as a
     replacement (generateSteps: "re-create replaced resource ... deleted due to dependent DBR").
  E6 Without delete-before-replace, the new resource is created first and the old one
     deleted with the other deletes at the end (continueStepsFromDiff).
  E7 Resources not registered (or all, on destroy) are deleted at the end in antichains:
     a resource only after every condemned resource that depends on it, through
     provider, parent, dependencies, property dependencies, deleted_with or replace_with
     (ScheduleDeletes; pkg/resource/graph/dependency_graph.go DependenciesOf).
  E9 A registration whose URN is new but one of its aliases names an old resource takes
     that resource over: diffed against it, never deleted (getOldResource / generateAliases).
  E8 A delete whose deleted_with resource is being deleted in the same deployment calls
     no provider (pkg/resource/deploy/step.go DeleteStep.Apply, isDeletedWith).
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence


from scripts.ops.provider_rules import READ_BACK, rules_for

# ---------------------------------------------------------------- the engine's view of a resource


@dataclass
class Resource:
    urn: str
    type: str
    custom: bool
    parent: str = ""
    provider: str = ""  # the provider resource's URN
    dependencies: tuple[str, ...] = ()
    property_dependencies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    deleted_with: str = ""
    replace_with: tuple[str, ...] = ()
    delete_before_replace: Optional[bool] = None  # None: the provider's default
    ignore_changes: tuple[str, ...] = ()
    replace_on_changes: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()  # earlier URNs of this resource
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]

    def depends_on(self) -> set[str]:
        """Every edge DependingOn / DependenciesOf follow (dependency_graph.go)."""
        edges = set(self.dependencies) | set(self.replace_with)
        edges |= {urn for urns in self.property_dependencies.values() for urn in urns}
        edges |= {u for u in (self.deleted_with, self.provider, self.parent) if u}
        return edges


def from_registrations(registrations: Iterable[Any]) -> list[Resource]:
    """The model's resources from scripts/ops/program_mocks.py registrations, in program order."""
    return [
        Resource(
            urn=r.urn,
            type=r.type,
            custom=r.custom,
            parent=r.parent,
            provider=r.provider.rsplit("::", 1)[0] if r.provider else "",  # a reference is `urn::id`
            dependencies=tuple(r.dependencies),
            property_dependencies={k: tuple(v) for k, v in r.property_dependencies.items()},
            deleted_with=r.deleted_with,
            replace_with=tuple(r.replace_with),
            delete_before_replace=r.delete_before_replace or None,
            ignore_changes=tuple(r.ignore_changes),
            replace_on_changes=tuple(r.replace_on_changes),
            aliases=tuple(f"{r.urn.rsplit('::', 1)[0]}::{name}" for name in r.alias_names),
            inputs=copy.deepcopy(r.inputs),
        )
        for r in registrations
        if r.type != "pulumi:pulumi:Stack"
    ]


# ---------------------------------------------------------------- diffs


_PATH = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _path(path: str) -> list[Any]:
    return [int(index) if index else key for key, index in _PATH.findall(path)]


def _get(value: Any, parts: Sequence[Any]) -> Any:
    for part in parts:
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                return None
        elif not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _set(value: Any, parts: Sequence[Any], new: Any) -> None:
    for part in parts[:-1]:
        value = value[part]
    value[parts[-1]] = new


def with_ignored(old: Resource, new: Resource) -> dict[str, Any]:
    """E2: the new inputs with every ignore_changes path holding its old value."""
    inputs = copy.deepcopy(new.inputs)
    for path in new.ignore_changes:
        parts = _path(path)
        old_value = _get(old.inputs, parts)
        if old_value is None:
            continue
        if len(parts) == 1:
            inputs[parts[0]] = copy.deepcopy(old_value)
        elif _get(inputs, parts[:-1]) is not None:
            _set(inputs, parts, copy.deepcopy(old_value))
    return inputs


def _changed_under(path: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether the value at `path` (`x[*]`: anywhere under x) differs."""
    parts = _path(path.removesuffix("[*]"))
    return _get(old, parts) != _get(new, parts)


@dataclass(frozen=True)
class Diff:
    replace: bool
    changed: frozenset[str]
    why: str

    @property
    def changes(self) -> bool:
        return self.replace or bool(self.changed)


# ---------------------------------------------------------------- a deployment


@dataclass(frozen=True)
class Step:
    op: str  # create | update | same | delete | delete-replaced | create-replacement
    urn: str
    why: str = ""
    reboots: bool = False  # an update that powers the VM off and on
    calls_provider: bool = True  # False: deleted_with a resource deleted in the same run (E8)

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]

    @property
    def kind(self) -> str:
        """The type's last part: VirtualMachine, Container, Command, RayNode..."""
        return self.urn.rsplit("::", 2)[-2].rsplit("$", 1)[-1].rsplit(":", 1)[-1]


@dataclass
class Plan:
    """The steps in an order the engine guarantees: each inner list may run in parallel,
    a list only after the one before it."""

    rounds: list[list[Step]]

    @property
    def steps(self) -> list[Step]:
        return [step for round_ in self.rounds for step in round_]

    def index(self, op: str, kind: str, name: str) -> int:
        found = [i for i, round_ in enumerate(self.rounds) for s in round_ if (s.op, s.kind, s.name) == (op, kind, name)]
        if len(found) != 1:
            raise LookupError(f"{op} {kind} {name}: found {len(found)} times in the plan")
        return found[0]

    def has(self, op: str, kind: str, name: str) -> bool:
        return any((s.op, s.kind, s.name) == (op, kind, name) for s in self.steps)

    def before(self, first: tuple[str, str, str], then: tuple[str, str, str]) -> bool:
        """`first` finishes before `then` starts."""
        return self.index(*first) < self.index(*then)

    def step(self, op: str, kind: str, name: str) -> Step:
        (found,) = [s for s in self.steps if (s.op, s.kind, s.name) == (op, kind, name)]
        return found

    def changed(self) -> list[Step]:
        """Every step that does something (not `same`)."""
        return [s for s in self.steps if s.op != "same"]


class Deployment:
    """One `pulumi up` (or destroy) from `old` state to the `new` registrations."""

    def __init__(self, old: Sequence[Resource], targets: Iterable[str] = ()):
        self.old = list(old)
        self.old_by_urn = {r.urn: r for r in self.old}
        self.index = {r.urn: i for i, r in enumerate(self.old)}
        self.targets = set(targets)  # URNs given to --replace
        self.replaces: set[str] = set()
        self.deletes: set[str] = set()  # sg.deletes: E8 looks here
        self.operated: set[str] = set()
        self.news: dict[str, Resource] = {}
        self.rounds: list[list[Step]] = []
        self.late_deletes: list[str] = []  # E6
        self.taken_over: set[str] = set()  # E9: old URNs a renamed registration took over

    # E1-E3
    def diff(self, old: Resource, new: Resource) -> Diff:
        if new.urn in self.targets:
            return Diff(True, frozenset({"id"}), "targeted by --replace")
        for urn in new.replace_with:
            if urn in self.replaces:
                return Diff(True, frozenset({"replaceWith"}), f"replace_with {urn.rsplit('::', 1)[-1]}")
        if new.deleted_with and new.deleted_with in self.replaces:
            return Diff(True, frozenset({"deletedWith"}), f"deleted_with {new.deleted_with.rsplit('::', 1)[-1]}")
        if new.provider and new.provider in self.replaces:
            return Diff(True, frozenset({"provider"}), "its provider is replaced")
        inputs = with_ignored(old, new)
        changed = {key for key in set(inputs) | set(old.inputs) if inputs.get(key) != old.inputs.get(key)}
        changed |= {key for key, urns in new.property_dependencies.items() if set(urns) & self.replaces and key not in new.ignore_changes}
        forced = sorted(p for p in new.replace_on_changes if p in changed or _changed_under(p, old.inputs, inputs))
        if forced:
            return Diff(True, frozenset(changed), f"{', '.join(forced)} changed (replace_on_changes)")
        return self._provider_diff(new.type, frozenset(changed))

    @staticmethod
    def _provider_diff(type_token: str, changed: frozenset[str]) -> Diff:
        if not changed:
            return Diff(False, changed, "")
        if type_token.startswith("ray-cluster:"):  # components have no provider
            return Diff(False, frozenset(), "")
        rules = rules_for(type_token)
        replacing = sorted(k for k in changed if rules.replaces(k))
        if replacing:
            return Diff(True, changed, f"{', '.join(replacing)} changed ({rules.source.split(':')[0]})")
        return Diff(False, changed, f"{', '.join(sorted(changed))} changed")

    def _delete_before_replace(self, res: Resource) -> bool:
        if res.delete_before_replace is not None:
            return res.delete_before_replace
        return not res.type.startswith("ray-cluster:") and rules_for(res.type).delete_before_replace

    # E4
    def dependent_replacements(self, root: Resource) -> list[Resource]:
        replace_set, dependents, found = {root.urn}, {root.urn}, []
        for candidate in self.old[self.index[root.urn] + 1:]:
            if candidate.urn in self.operated or not (candidate.depends_on() - {candidate.parent}) & dependents:
                continue
            dependents.add(candidate.urn)
            if self._requires_replacement(candidate, replace_set):
                replace_set.add(candidate.urn)
                found.append(candidate)
        return found

    def _requires_replacement(self, res: Resource, replace_set: set[str]) -> bool:
        if not res.custom:
            return False
        if res.provider in replace_set or res.deleted_with in replace_set:
            return True
        unknown = frozenset(
            key for key, urns in res.property_dependencies.items() if set(urns) & replace_set and key not in res.ignore_changes
        )
        return bool(unknown) and self._provider_diff(res.type, unknown).replace

    def cascade(self, urn: str) -> list[Resource]:
        """findDependentCascadeReplacements: news first, then olds, one level."""
        seen, found = set(), []
        for res in [*self.news.values(), *self.old]:
            if res.urn not in seen and (urn in res.replace_with or res.deleted_with == urn):
                seen.add(res.urn)
                found.append(res)
        return found

    def register(self, new: Resource) -> None:
        """GenerateSteps for one registration, in program order."""
        self.news[new.urn] = new
        old = self.old_by_urn.get(new.urn) or next((self.old_by_urn[a] for a in new.aliases if a in self.old_by_urn), None)
        if old is not None and old.urn != new.urn:  # E9
            self.taken_over.add(old.urn)
        if old is None:
            self._emit(Step("create", new.urn))
        elif new.urn in self.deletes:  # E5
            self.deletes.discard(new.urn)
            self.replaces.add(new.urn)
            self._emit(Step("create-replacement", new.urn, "deleted by a dependent delete-before-replace"))
        else:
            diff = self.diff(old, new)
            if diff.replace:
                self.replaces.add(new.urn)
                if self._delete_before_replace(new):
                    self._delete_before(old, diff.why)
                    self._emit(Step("create-replacement", new.urn, diff.why))
                else:  # E6
                    self._emit(Step("create-replacement", new.urn, diff.why))
                    self.late_deletes.append(old.urn)
            elif diff.changed:
                rules = rules_for(new.type)
                effective = diff.changed - rules.no_effect_keys
                self._emit(Step("update", new.urn, diff.why, reboots=bool(effective & rules.reboot_keys)))
            else:
                self._emit(Step("same", new.urn))
        self.operated.add(new.urn)

    def _delete_before(self, old: Resource, why: str) -> None:
        chain = self.dependent_replacements(old) + self.cascade(old.urn)
        for res in reversed(chain):
            if res.urn in self.deletes:
                continue
            self.deletes.add(res.urn)
            self._emit(Step("delete-replaced", res.urn, f"depends on {old.name}, which is replaced ({why})"))
        self.deletes.add(old.urn)
        self._emit(Step("delete-replaced", old.urn, why))

    def _emit(self, step: Step) -> None:
        self.rounds.append([step])

    # E7, E8
    def finish(self, registered: Iterable[str]) -> Plan:
        registered = set(registered) | self.taken_over
        condemned = [r for r in self.old if r.urn not in registered and r.urn not in self.deletes] + [
            self.old_by_urn[u] for u in self.late_deletes
        ]
        self.deletes |= {r.urn for r in condemned}
        remaining = {r.urn: r for r in condemned}
        rounds: list[list[Step]] = []
        while remaining:
            free = [r for r in remaining.values() if not (r.depends_on() & remaining.keys())]
            if not free:
                raise RuntimeError("a dependency cycle among deletes")
            rounds.append(free)
            for r in free:
                del remaining[r.urn]
        for round_ in reversed(rounds):
            self.rounds.append([
                Step(
                    "delete-replaced" if r.urn in self.late_deletes else "delete",
                    r.urn,
                    calls_provider=r.custom and not (r.deleted_with and r.deleted_with in self.deletes),
                )
                for r in sorted(round_, key=lambda r: r.urn)
            ])
        # E8 for the delete-before-replace chains, now that every delete of the run is known.
        self.rounds = [
            [
                Step(s.op, s.urn, s.why, s.reboots, calls_provider=self._deleted_with(s.urn) not in self.deletes)
                if s.op.startswith("delete") and s.calls_provider
                else s
                for s in round_
            ]
            for round_ in self.rounds
        ]
        return Plan(self.rounds)

    def _deleted_with(self, urn: str) -> str:
        res = self.old_by_urn.get(urn)
        return res.deleted_with if res and res.deleted_with else "\0"


def up(old: Sequence[Resource], new: Sequence[Resource], replace: Iterable[str] = ()) -> Plan:
    """`pulumi up` from `old` state to the program's `new` registrations (`--replace` URNs)."""
    deployment = Deployment(old, targets=replace)
    for res in new:
        deployment.register(res)
    return deployment.finish(res.urn for res in new)


def destroy(old: Sequence[Resource]) -> Plan:
    return Deployment(old).finish(())


def refreshed(resources: Sequence[Resource]) -> list[Resource]:
    """State after a refresh: every input as its provider reads it back (READ_BACK)."""
    result = []
    for res in resources:
        res = copy.deepcopy(res)
        for path, normalise in READ_BACK.get(res.type, {}).items():
            parts = _path(path)
            value = _get(res.inputs, parts)
            if value is not None:
                _set(res.inputs, parts, normalise(value))
        result.append(res)
    return result
