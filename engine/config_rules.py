"""The rules a config value must follow, as small objects a dataclass field carries.

A field of a config section declares its rule next to its default (``setting(0.1, Above(0))`` is
``field(default=0.1, metadata={"rule": Above(0)})``), and ``engine.config.validate`` walks the fields and
checks each value against its rule. Every rule words its refusal in one of the two forms the engine has
always used, so messages do not depend on how a rule is written:

    KEY=VALUE is not valid; choose one of: A, B        (OneOf)
    KEY=VALUE is not valid: WHAT                       (every other rule; ``invalid``)

Rules that relate two fields (one weight per resolution, a catalog dataset needs ``eval.source=catalog``)
are plain functions next to their section in ``engine.config``; they raise through ``invalid`` too.

Imports nothing heavier than ``engine.errors``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ConfigError

RULE = "rule"  # the metadata key a field's rule is stored under


def invalid(key: str, value: Any, what: str) -> ConfigError:
    """The error for ``key`` holding ``value``: ``KEY=VALUE is not valid: WHAT``."""
    return ConfigError(f"{key}={value!r} is not valid: {what}")


def setting(default: Any, rule: Rule | None = None) -> Any:
    """A dataclass field with ``default`` (a list default is copied for each instance) and ``rule``."""
    metadata = {RULE: rule} if rule is not None else {}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def rule_of(f: Any) -> Rule | None:
    """The rule a dataclass field carries, or None."""
    return f.metadata.get(RULE)


class Rule:
    """A check of one value. Subclasses define ``ok`` and ``what`` (the reason a refusal gives)."""

    @property
    def what(self) -> str:
        raise NotImplementedError

    def ok(self, value: Any) -> bool:
        raise NotImplementedError

    def check(self, key: str, value: Any) -> None:
        if not self.ok(value):
            raise invalid(key, value, self.what)


def _note(text: str, note: str) -> str:
    return f"{text} ({note})" if note else text


@dataclass(frozen=True)
class OneOf(Rule):
    """One of ``allowed``, refused with the list (in the order given)."""

    allowed: tuple[str, ...]

    @property
    def what(self) -> str:
        return f"choose one of: {', '.join(self.allowed)}"

    def ok(self, value: Any) -> bool:
        return value in self.allowed

    def check(self, key: str, value: Any) -> None:
        if not self.ok(value):
            raise ConfigError(f"{key}={value!r} is not valid; {self.what}")


@dataclass(frozen=True)
class AtLeast(Rule):
    """``value >= low``; ``note`` says what the bound means (``0 = off``)."""

    low: int | float
    note: str = ""

    @property
    def what(self) -> str:
        return _note(f"must be >= {self.low}", self.note)

    def ok(self, value: Any) -> bool:
        return value >= self.low


@dataclass(frozen=True)
class Above(Rule):
    """``value > low``."""

    low: int | float
    note: str = ""

    @property
    def what(self) -> str:
        return _note(f"must be > {self.low}", self.note)

    def ok(self, value: Any) -> bool:
        return value > self.low


@dataclass(frozen=True)
class Positive(Rule):
    """``value > 0``, worded "positive" (resolutions in px)."""

    @property
    def what(self) -> str:
        return "must be positive"

    def ok(self, value: Any) -> bool:
        return value > 0


@dataclass(frozen=True)
class InRange(Rule):
    """``low <= value < high`` by default; ``closed`` says which ends are included ("[)", "(]", "[]", "()")."""

    low: int | float
    high: int | float
    closed: str = "[)"

    @property
    def what(self) -> str:
        return f"must be in {self.closed[0]}{self.low}, {self.high}{self.closed[1]}"

    def ok(self, value: Any) -> bool:
        above = value >= self.low if self.closed[0] == "[" else value > self.low
        below = value <= self.high if self.closed[1] == "]" else value < self.high
        return above and below


@dataclass(frozen=True)
class MultipleOf(Rule):
    """A positive multiple of ``step`` (the backbones halve the input four times)."""

    step: int

    @property
    def what(self) -> str:
        return f"must be a multiple of {self.step}"

    def ok(self, value: Any) -> bool:
        return value >= self.step and value % self.step == 0


@dataclass(frozen=True)
class Increasing(Rule):
    """A list in non-decreasing order (LR milestones)."""

    @property
    def what(self) -> str:
        return "must be increasing"

    def ok(self, value: Any) -> bool:
        return list(value) == sorted(value)


@dataclass(frozen=True)
class FullMatch(Rule):
    """A string the whole of which matches ``pattern``; ``hint`` says what is accepted."""

    pattern: re.Pattern[str]
    hint: str

    @property
    def what(self) -> str:
        return self.hint

    def ok(self, value: Any) -> bool:
        return self.pattern.fullmatch(value) is not None


@dataclass(frozen=True)
class Each(Rule):
    """Every item of a list passes ``item``; the refusal names the whole list and ``item``'s reason."""

    item: Rule

    @property
    def what(self) -> str:
        return self.item.what

    def ok(self, value: Any) -> bool:
        return all(self.item.ok(v) for v in value)


@dataclass(frozen=True)
class SubsetOf(Rule):
    """Every item of a list is one of ``allowed``; ``hint`` says what each means."""

    allowed: tuple[str, ...]
    hint: str

    @property
    def what(self) -> str:
        return self.hint

    def ok(self, value: Any) -> bool:
        return all(v in self.allowed for v in value)


@dataclass(frozen=True)
class EachParses(Rule):
    """Every item of a list is accepted by ``parse``, which raises its own ConfigError (``eval.benchmarks``
    entries are refused by the benchmark registry's parser, in its words)."""

    parse: Callable[[str], Any]
    hint: str

    @property
    def what(self) -> str:
        return self.hint

    def ok(self, value: Sequence[str]) -> bool:
        try:
            self.check("", value)
        except ConfigError:
            return False
        return True

    def check(self, key: str, value: Any) -> None:
        for item in value:
            self.parse(item)
