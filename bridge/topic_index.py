"""Which subscribed MQTT filters match a topic, without trying every filter.

The front holds one broker subscription per distinct filter (thousands with many dashboards)
and must find the matching ones for every incoming message. Testing each filter costs
O(filters) per message (about 1 ms per message at 1,000 filters, measured with
bench/fanout.py); this trie walks the topic's levels instead, following the exact level,
``+`` and ``#`` children: O(levels), independent of how many filters exist.
"""

from __future__ import annotations


class _Node:
    __slots__ = ("children", "filters")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.filters: set[str] = set()  # filters ending at this node


class TopicIndex:
    def __init__(self) -> None:
        self._root = _Node()

    def add(self, filter_: str) -> None:
        node = self._root
        for level in filter_.split("/"):
            node = node.children.setdefault(level, _Node())
        node.filters.add(filter_)

    def discard(self, filter_: str) -> None:
        path = [self._root]
        levels = filter_.split("/")
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return
            path.append(child)
        path[-1].filters.discard(filter_)
        # prune empty branches so churn (clients coming and going) does not grow the trie
        for level, parent, node in zip(
            reversed(levels), reversed(path[:-1]), reversed(path[1:]), strict=True
        ):
            if node.filters or node.children:
                break
            del parent.children[level]

    def match(self, topic: str) -> list[str]:
        """Every filter that matches ``topic`` (MQTT rules; ``$`` topics are not special here:
        the front only subscribes below its own prefix)."""
        out: list[str] = []
        levels = topic.split("/")
        last = len(levels)
        stack = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            wild = node.children.get("#")
            if wild is not None:
                out.extend(wild.filters)  # '#' also matches the parent level itself
            if depth == last:
                out.extend(node.filters)
                continue
            exact = node.children.get(levels[depth])
            if exact is not None:
                stack.append((exact, depth + 1))
            plus = node.children.get("+")
            if plus is not None:
                stack.append((plus, depth + 1))
        return out
