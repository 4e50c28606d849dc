"""Topic patterns with named levels: ``tele/{device}/SENSOR`` (pure).

A pattern is a topic whose levels are literals or captures:

- ``{name}`` captures exactly one level (an MQTT ``+``); ``+`` is the same without a name;
- ``{name#}`` captures one or more levels joined by ``/`` (zigbee2mqtt friendly names may
  hold slashes); at most one per pattern, anywhere. ``#`` is the same without a name and
  only as the last level, as in MQTT.

The subscription filter covers the pattern: the levels up to a multi-level capture, then
``#``. A pattern never starts with ``$`` (the broker's own topics) and its literals hold no
MQTT wildcards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

_CAPTURE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,31})(#?)\}")
_MAX_LEVELS: Final = 16


class PatternError(ValueError):
    """A topic pattern that cannot be used (said at configuration time, never per message)."""


@dataclass(frozen=True, slots=True)
class TopicPattern:
    """A compiled pattern. ``match`` costs a split and a few string comparisons."""

    text: str
    # per level: (literal, None) or (None, capture name); "" names an anonymous capture
    head: tuple[tuple[str | None, str | None], ...]
    # with a multi-level capture: its name and the levels after it; else None
    rest: str | None
    tail: tuple[tuple[str | None, str | None], ...]

    @property
    def filter(self) -> str:
        """The MQTT subscription filter covering every topic this pattern matches."""
        levels = [literal if literal is not None else "+" for literal, _ in self.head]
        if self.rest is not None:
            levels.append("#")
        return "/".join(levels)

    @property
    def literal_count(self) -> int:
        return sum(lit is not None for lit, _ in (*self.head, *self.tail))

    @property
    def first_literal(self) -> str | None:
        """The first level when it is a literal (the MappingSet's index key)."""
        return self.head[0][0] if self.head else None

    @property
    def names(self) -> tuple[str, ...]:
        found = [name for _, name in (*self.head, *self.tail) if name]
        if self.rest:
            found.append(self.rest)
        return tuple(found)

    def match(self, topic: str) -> dict[str, str] | None:
        """The captured levels of ``topic``, or None when it does not fit the pattern."""
        levels = topic.split("/")
        head, tail = self.head, self.tail
        if self.rest is None:
            if len(levels) != len(head):
                return None
        elif len(levels) < len(head) + len(tail) + 1:
            return None
        out: dict[str, str] = {}
        for (literal, name), level in zip(head, levels, strict=False):
            if literal is not None:
                if level != literal:
                    return None
            elif not level:
                return None  # an empty level is never a name
            elif name:
                out[name] = level
        if self.rest is None:
            return out
        end = len(levels) - len(tail)
        for (literal, name), level in zip(tail, levels[end:], strict=True):
            if literal is not None:
                if level != literal:
                    return None
            elif not level:
                return None
            elif name:
                out[name] = level
        middle = levels[len(head) : end]
        if not all(middle):
            return None
        if self.rest:
            out[self.rest] = "/".join(middle)
        return out


def compile_pattern(text: str) -> TopicPattern:
    """Parse ``text``; raises :class:`PatternError` saying what is wrong with it."""
    if not text or text.startswith("$"):
        raise PatternError(f"topic pattern {text!r} must be non-empty and not start with '$'")
    levels = text.split("/")
    if len(levels) > _MAX_LEVELS:
        raise PatternError(f"topic pattern {text!r} has more than {_MAX_LEVELS} levels")
    head: list[tuple[str | None, str | None]] = []
    tail: list[tuple[str | None, str | None]] = []
    rest: str | None = None
    seen: set[str] = set()
    for index, level in enumerate(levels):
        target = head if rest is None else tail
        if level == "+":
            target.append((None, ""))
            continue
        if level == "#":
            if index != len(levels) - 1 or rest is not None:
                raise PatternError(f"topic pattern {text!r}: '#' only as the last level")
            rest = ""
            continue
        capture = _CAPTURE.fullmatch(level)
        if capture is None:
            if not level or any(c in level for c in "+#{}\x00"):
                raise PatternError(
                    f"topic pattern {text!r}: level {level!r} is neither a literal nor a "
                    "{name} / {name#} capture"
                )
            target.append((level, None))
            continue
        name, multi = capture.group(1), capture.group(2)
        if name in seen:
            raise PatternError(f"topic pattern {text!r} names {{{name}}} twice")
        seen.add(name)
        if multi:
            if rest is not None:
                raise PatternError(f"topic pattern {text!r} has more than one multi-level capture")
            rest = name
        else:
            target.append((None, name))
    return TopicPattern(text, tuple(head), rest, tuple(tail))


def filter_covers(wide: str, narrow: str) -> bool:
    """Whether every topic matching MQTT filter ``narrow`` also matches ``wide``."""
    w, n = wide.split("/"), narrow.split("/")
    for index, level in enumerate(w):
        if level == "#":
            return True
        if index >= len(n):
            return False
        if level == "+":
            if n[index] == "#":
                return False
            continue
        if level != n[index]:
            return False
    return len(w) == len(n)
