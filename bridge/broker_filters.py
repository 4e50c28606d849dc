"""Which filters the front's one broker connection should hold when the broker cannot say which
subscription a message came through (MQTT 3.1.1).

A broker may send one copy of a message per matching subscription of a connection (the iotcore
fallback broker does so over MQTT 3.1.1; mosquitto does so over MQTT 5). Over MQTT 5 every
copy names its subscription (subscription identifiers, bridge/hub.py). Over MQTT 3.1.1 the
copies are indistinguishable, so the broker must never hold two filters a topic can match:
:class:`Cover` keeps a set of broker filters that are pairwise disjoint and together cover
every filter in use. A filter subsumed by a broker filter needs no subscription of its own; two
filters that overlap without one containing the other (``telemetry/d1/+`` and
``telemetry/+/temperature``) are replaced on the broker by the narrowest filter containing
both (``telemetry/+/+``), and the front drops what its clients did not ask for. Dispatch to
the filters in use stays local (bridge/topic_index.py).

Filters are MQTT topic filters as the front builds them: ``/``-separated levels, ``+`` for one
level, ``#`` only as the last level (it also matches its parent level), and filters whose first
level is a wildcard match no topic that starts with ``$``. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable


def matches(filter_: str, topic: str) -> bool:
    """MQTT filter matching: `+` one level, `#` the rest; `$` topics never match wildcards."""
    if topic.startswith("$") and filter_[:1] in ("+", "#"):
        return False
    f_levels, t_levels = filter_.split("/"), topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels) or (f != "+" and f != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


def _wild_first_vs_dollar(a: list[str], b: list[str]) -> bool:
    """A filter starting with a wildcard never matches a ``$`` topic, which is all that a
    filter starting with a literal ``$`` level matches."""
    return (a[0] in ("+", "#") and b[0].startswith("$")) or (
        b[0] in ("+", "#") and a[0].startswith("$")
    )


def overlaps(a: str, b: str) -> bool:
    """Whether some topic matches both filters."""
    la, lb = a.split("/"), b.split("/")
    if _wild_first_vs_dollar(la, lb):
        return False
    for i in range(max(len(la), len(lb))):
        if i >= len(la):
            return lb[i] == "#"  # 'x/#' matches 'x'
        if i >= len(lb):
            return la[i] == "#"
        x, y = la[i], lb[i]
        if x == "#" or y == "#":
            return True
        if x != y and x != "+" and y != "+":
            return False
    return True


def subsumes(a: str, b: str) -> bool:
    """Whether every topic that matches ``b`` also matches ``a``."""
    la, lb = a.split("/"), b.split("/")
    if la[0] in ("+", "#") and lb[0].startswith("$"):
        return False
    for i, x in enumerate(la):
        if x == "#":
            return True  # b agreed on every level before, and '#' takes the rest (or none)
        if i >= len(lb):
            return False  # b matches topics shorter than a ever does
        if lb[i] == "#":
            # b matches deeper topics, and its parent level unless '#' is all of b, which
            # makes '#' the same as '+/#'
            return i == 0 and la == ["+", "#"]
        if x != "+" and x != lb[i]:
            return False
    return len(la) == len(lb)


def join(a: str, b: str) -> str:
    """The narrowest filter that every topic of ``a`` and of ``b`` matches (for filters that
    overlap: level by level, equal levels stay and different ones become ``+``)."""
    la, lb = a.split("/"), b.split("/")
    out: list[str] = []
    for i in range(max(len(la), len(lb))):
        if i >= len(la) or i >= len(lb) or la[i] == "#" or lb[i] == "#":
            out.append("#")
            break
        out.append(la[i] if la[i] == lb[i] else "+")
    return "/".join(out)


class _Node:
    __slots__ = ("children", "filter")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.filter: str | None = None  # the filter ending at this node


class FilterTrie:
    """A set of filters that answers "which of you overlap this filter" without testing each."""

    def __init__(self) -> None:
        self._root = _Node()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, filter_: str) -> None:
        node = self._root
        for level in filter_.split("/"):
            node = node.children.setdefault(level, _Node())
        if node.filter is None:
            self._size += 1
        node.filter = filter_

    def discard(self, filter_: str) -> None:
        levels = filter_.split("/")
        path = [self._root]
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return
            path.append(child)
        if path[-1].filter is None:
            return
        path[-1].filter = None
        self._size -= 1
        for level, parent, node in zip(
            reversed(levels), reversed(path[:-1]), reversed(path[1:]), strict=True
        ):
            if node.filter is not None or node.children:
                break
            del parent.children[level]

    def overlapping(self, filter_: str) -> list[str]:
        """Every filter of the set that some topic matching ``filter_`` also matches."""
        q = filter_.split("/")
        out: list[str] = []
        stack = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            if i == len(q):
                if node.filter is not None:
                    out.append(node.filter)
                hash_ = node.children.get("#")  # 'x/#' matches 'x'
                if hash_ is not None and hash_.filter is not None:
                    out.append(hash_.filter)
                continue
            level = q[i]
            if level == "#":
                if node.filter is not None and i > 0:
                    out.append(node.filter)  # 'x/#' matches 'x'
                self._collect(node, i, out)
                continue
            dollar_guard = i == 0 and (level.startswith("$") or level == "+")
            for name, child in node.children.items():
                if dollar_guard and _wild_first_vs_dollar([level], [name]):
                    continue
                if name == "#":
                    if child.filter is not None:
                        out.append(child.filter)
                elif name == "+" or level == "+" or name == level:
                    stack.append((child, i + 1))
        return out

    def match(self, topic: str) -> list[str]:
        """Every filter of the set that ``topic`` matches."""
        out: list[str] = []
        levels = topic.split("/")
        last = len(levels)
        normal = not topic.startswith("$")
        stack = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            children = node.children
            wild = children.get("#")
            if wild is not None and wild.filter is not None and (normal or depth > 0):
                out.append(wild.filter)  # '#' also matches the parent level itself
            if depth == last:
                if node.filter is not None:
                    out.append(node.filter)
                continue
            exact = children.get(levels[depth])
            if exact is not None:
                stack.append((exact, depth + 1))
            plus = children.get("+")
            if plus is not None and (normal or depth > 0):
                stack.append((plus, depth + 1))
        return out

    @staticmethod
    def _collect(node: _Node, depth: int, out: list[str]) -> None:
        """Every filter below ``node`` (a query ``#`` at level ``depth``)."""
        stack = [(name, child) for name, child in node.children.items()]
        while stack:
            name, child = stack.pop()
            if depth == 0 and name.startswith("$"):
                continue  # a query starting with '#' matches no '$' topic
            if child.filter is not None:
                out.append(child.filter)
            stack.extend((name, grandchild) for grandchild in child.children.values())


class Cover:
    """Broker filters, pairwise disjoint, that cover every filter in use; each one is the
    narrowest filter containing the filters it covers.

    ``add`` and ``remove`` return what to change on the broker: ``(subscribe, unsubscribe)``.
    Subscribe first, then unsubscribe, so nothing in use is ever uncovered; messages the
    broker routes in between may come twice (bridge/hub.py suppresses those copies).
    """

    def __init__(self, filters: Iterable[str] = ()) -> None:
        self._broker = FilterTrie()
        self._members: dict[str, set[str]] = {}  # broker filter -> filters in use it covers
        self._owner: dict[str, str] = {}  # filter in use -> its broker filter
        for f in filters:
            self.add(f)

    def broker_filters(self) -> list[str]:
        return list(self._members)

    def owner(self, filter_: str) -> str | None:
        return self._owner.get(filter_)

    def members(self, broker_filter: str) -> set[str]:
        return set(self._members.get(broker_filter, ()))

    def add(self, filter_: str) -> tuple[list[str], list[str]]:
        if filter_ in self._owner:
            return [], []
        hits = self._broker.overlapping(filter_)
        if len(hits) == 1 and subsumes(hits[0], filter_):
            self._members[hits[0]].add(filter_)
            self._owner[filter_] = hits[0]
            return [], []
        wide, absorbed = filter_, set[str]()
        while hits:
            for h in hits:
                wide = join(wide, h)
                absorbed.add(h)
            hits = [h for h in self._broker.overlapping(wide) if h not in absorbed]
        members = {filter_}
        for h in absorbed:
            members |= self._members.pop(h)
            self._broker.discard(h)
        self._place(wide, members)
        return [wide], sorted(absorbed - {wide})

    def remove(self, filter_: str) -> tuple[list[str], list[str]]:
        broker_filter = self._owner.pop(filter_, None)
        if broker_filter is None:
            return [], []
        members = self._members[broker_filter]
        members.discard(filter_)
        if not members:
            del self._members[broker_filter]
            self._broker.discard(broker_filter)
            return [], [broker_filter]
        if broker_filter in members:
            return [], []  # still in use itself: it is the narrowest cover of the rest
        # The rest lies inside broker_filter, hence apart from every other broker filter:
        # cover it on its own. It may need narrower filters now, or several.
        sub = Cover(sorted(members))
        narrower = sub.broker_filters()
        if narrower == [broker_filter]:
            return [], []
        del self._members[broker_filter]
        self._broker.discard(broker_filter)
        for f in narrower:
            self._place(f, sub._members[f])
        return sorted(narrower), [broker_filter]

    def _place(self, broker_filter: str, members: set[str]) -> None:
        self._members[broker_filter] = members
        self._broker.add(broker_filter)
        for m in members:
            self._owner[m] = broker_filter
