"""The enabled mappings, and which one a topic belongs to (pure).

Routing rule, when several patterns match one topic: the most specific wins, that is

1. the pattern with more literal levels (``zigbee2mqtt/{device#}/availability`` before
   ``zigbee2mqtt/{device#}``);
2. then one whose first level is a literal (``zigbee2mqtt/{device#}`` before
   ``{device}/status`` for ``zigbee2mqtt/status``);
3. then one without a multi-level capture;
4. then the one given first.

A mapping's ``exclude_topics`` take a topic out of that mapping only; the next one in this
order may still have it. The bridge's own topics (``devices/...`` under the deployment's
topic prefix) and the broker's (``$SYS/...``) never route to a mapping, whatever the patterns.
"""

from __future__ import annotations

from collections.abc import Iterable

from ingest.mapping.api import Mapping
from ingest.mapping.pattern import compile_pattern, filter_covers

OWN_ROOT = "devices"


class MappingSet:
    """Mappings by priority, indexed on the first topic level."""

    def __init__(self, mappings: Iterable[Mapping], own_prefix: str = "") -> None:
        ordered = list(mappings)
        seen: set[str] = set()
        for mapping in ordered:
            if mapping.name in seen:
                raise ValueError(f"two mappings are named {mapping.name!r}")
            seen.add(mapping.name)
        keyed = [(self._priority(m, i), m) for i, m in enumerate(ordered)]
        keyed.sort(key=lambda pair: pair[0])
        self.mappings: tuple[Mapping, ...] = tuple(m for _, m in keyed)
        self._own = (own_prefix.rstrip("/") + "/" if own_prefix else "") + OWN_ROOT
        self._by_first: dict[str, tuple[Mapping, ...]] = {}
        self._wild: tuple[Mapping, ...] = tuple(
            m for m in self.mappings if _first_literal(m) is None
        )
        for first in {f for m in self.mappings if (f := _first_literal(m)) is not None}:
            # keeps the priority order: literal-first and wildcard-first mappings interleaved
            self._by_first[first] = tuple(
                m for m in self.mappings if _first_literal(m) in (first, None)
            )

    @staticmethod
    def _priority(mapping: Mapping, index: int) -> tuple[int, int, int, int]:
        try:
            pattern = compile_pattern(_pattern_of(mapping))
        except ValueError:
            return (0, 1, 1, index)
        return (
            -pattern.literal_count,
            0 if pattern.first_literal is not None else 1,
            0 if pattern.rest is None else 1,
            index,
        )

    def __len__(self) -> int:
        return len(self.mappings)

    def names(self) -> list[str]:
        return [m.name for m in self.mappings]

    def filters(self) -> list[str]:
        """The subscription filters, each once, none covered by another (a broker sends a
        message once per matching subscription of a client otherwise)."""
        unique = list(dict.fromkeys(m.filter for m in self.mappings))
        return [
            f for f in unique if not any(other != f and filter_covers(other, f) for other in unique)
        ]

    def unshared_filters(self) -> set[str]:
        """Filters of mappings that keep state across messages (Sparkplug's births): each
        ingest must see all of their messages, so they are not shared subscriptions."""
        return {m.filter for m in self.mappings if getattr(m, "stateful", False)}

    def is_own(self, topic: str) -> bool:
        own = self._own
        return topic.startswith(own) and (len(topic) == len(own) or topic[len(own)] == "/")

    def route(self, topic: str) -> Mapping | None:
        """The mapping whose pattern ``topic`` belongs to, or None."""
        if not topic or topic[0] == "$" or self.is_own(topic):
            return None
        first = topic.split("/", 1)[0]
        for mapping in self._by_first.get(first, self._wild):
            if mapping.match(topic) is not None:
                return mapping
        return None


def _first_literal(mapping: Mapping) -> str | None:
    level = mapping.filter.split("/", 1)[0]
    return None if level in ("+", "#") else level


def _pattern_of(mapping: Mapping) -> str:
    """A mapping's pattern text: a DeclaredMapping keeps its compiled pattern; any other
    mapping (Sparkplug's) is ordered by its filter, read as a pattern."""
    pattern = getattr(mapping, "pattern", None)
    text = getattr(pattern, "text", None)
    return text if isinstance(text, str) else mapping.filter
