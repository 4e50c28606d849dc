"""The hub against simulated brokers: subscriptions come and go while messages flow, and
every listener gets every message it is subscribed to exactly once.

Brokers simulated (no I/O; packets take effect in the order sent, acknowledgements come a
loop turn later, and messages wait in the connection's queue until the hub takes them; as
on a real connection, a SUBACK or UNSUBACK is read only after the messages sent before it):

- MQTT 5, one copy per matching subscription, each with its own identifier (mosquitto 2.0);
- MQTT 5, one copy naming every identifier that matched (allowed by the standard);
- MQTT 3.1.1, one copy per matching subscription (the iotcore fallback broker);
- MQTT 3.1.1, one copy per message (mosquitto for 3.1.1 clients).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.broker_filters import matches
from bridge.hub import Hub
from ingest.mqtt import Message, MqttEndpoint
from ingest.topics import Topics

FILTERS = [
    "telemetry/+/+",
    "telemetry/d1/+",
    "telemetry/+/m1",
    "telemetry/d1/m1",
    "telemetry/d2/+",
    "alerts/+/+",
    "alerts/x/+",
    "alerts/+/d1",
]
TOPICS = [
    "telemetry/d1/m1",
    "telemetry/d1/m2",
    "telemetry/d2/m1",
    "telemetry/d3/m2",
    "alerts/x/d1",
    "alerts/y/d2",
]
BROKERS = ["5-per-subscription", "5-combined", "3.1.1-per-subscription", "3.1.1-once"]


class FakeBroker:
    """Stands in for the hub's MQTT client and the broker behind it."""

    def __init__(self, kind: str, hub: Hub) -> None:
        self.kind = kind
        self.hub = hub
        self.subs: dict[str, int | None] = {}  # filter -> subscription identifier
        self.queue: deque[Message] = deque()
        self.packets: list[tuple[str, str, int | None]] = []
        self.sent = 0  # messages put in the connection so far
        self.taken = 0  # messages the hub has read so far
        # how the hub reads k messages; tests that track what it was owed replace it
        self.deliver: Callable[[int], None] = self.take

    def take(self, k: int) -> None:
        for _ in range(k):
            if self.queue:
                self.hub._dispatch(self.pop())

    def pop(self) -> Message:
        self.taken += 1
        return self.queue.popleft()

    async def _ack(self) -> None:
        """The acknowledgement of a packet just processed: it follows the messages sent
        before it, so those are read (handed to the hub) before the caller resumes."""
        sent_before = self.sent
        await asyncio.sleep(0)
        self.deliver(max(0, sent_before - self.taken))

    async def subscribe_and_wait(
        self, filter_: str, *, qos: int = 0, subscription_id: int = 0, retain_handling: int = 0
    ) -> int:
        sid = subscription_id or None
        assert self.kind.startswith("5") or sid is None
        self.subs[filter_] = sid  # a subscription of the same filter is replaced
        self.packets.append(("subscribe", filter_, sid))
        await self._ack()
        return 0

    async def unsubscribe_and_wait(self, filters: list[str]) -> None:
        for f in filters:
            self.subs.pop(f, None)
            self.packets.append(("unsubscribe", f, None))
        await self._ack()

    async def publish_and_wait(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        raise AssertionError("not used here")

    def publish(self, topic: str, n: int) -> None:
        payload = orjson.dumps({"n": n})
        held = [sid for f, sid in self.subs.items() if matches(f, topic)]
        if not held:
            return
        if self.kind == "3.1.1-once":
            copies: list[list[int]] = [[]]
        elif self.kind == "5-combined":
            copies = [[sid for sid in held if sid is not None]]
        else:
            copies = [[sid] if sid is not None else [] for sid in held]
        for sids in copies:
            self.queue.append(Message(topic, payload, 0, False, 0, tuple(sids)))
            self.sent += 1


class Recorder:
    def __init__(self, name: str, got: Counter[tuple[str, int]]) -> None:
        self.name, self.got = name, got

    def __call__(
        self, levels: tuple[str, ...], event: dict[str, Any], _r: bool, _f: dict[Any, Any]
    ) -> None:
        self.got[(self.name, event["n"])] += 1


def new_hub(kind: str) -> tuple[Hub, FakeBroker]:
    url = "mqtt://127.0.0.1:1" + ("" if kind.startswith("5") else "?protocol=3.1.1")
    hub = Hub(MqttEndpoint.from_url(url), Topics(""), "test")
    broker = FakeBroker(kind, hub)
    hub._client = broker  # type: ignore[assignment]
    hub.connected.set()
    return hub, broker


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 2), st.sampled_from(FILTERS)),
        st.tuples(st.just("remove"), st.integers(0, 2), st.sampled_from(FILTERS)),
        st.tuples(st.just("publish"), st.integers(0, len(TOPICS) - 1), st.just("")),
        st.tuples(st.just("take"), st.integers(1, 4), st.just("")),
        st.tuples(st.just("turn"), st.integers(1, 4), st.just("")),
    ),
    max_size=60,
)


@pytest.mark.parametrize("kind", BROKERS)
@settings(max_examples=300, deadline=None)
@given(
    steady=st.lists(st.sampled_from(FILTERS), min_size=1, max_size=3, unique=True),
    ops=OPS,
)
def test_exactly_once_while_subscriptions_change(
    kind: str, steady: list[str], ops: list[tuple[str, int, str]]
) -> None:
    """Steady listeners get every message published after they subscribed exactly once;
    listeners that come and go never get one twice, nor one they had no filter for."""

    async def run() -> None:
        hub, broker = new_hub(kind)
        got: Counter[tuple[str, int]] = Counter()
        stable = Recorder("steady", got)
        for f in steady:
            await hub.add(f, stable)
        churn = [Recorder(f"churn{i}", got) for i in range(3)]
        used: dict[str, set[str]] = {c.name: set() for c in churn}
        tasks: list[asyncio.Task[None]] = []
        published: list[str] = []  # topics, by message number
        # (listener, filter) -> number of the first message published once its add() had
        # returned, while no remove() of it has been called since
        live: dict[tuple[str, str], int] = {}
        calls: Counter[tuple[str, str]] = Counter()  # add/remove calls, to spot stale adds
        owed: set[tuple[str, int]] = set()  # (listener, message) that must arrive once

        def take(k: int) -> None:
            for _ in range(k):
                if broker.queue:
                    msg = broker.pop()
                    n = orjson.loads(msg.payload)["n"]
                    for (name, f), since in live.items():
                        if since <= n and matches(f, msg.topic):
                            owed.add((name, n))
                    hub._dispatch(msg)

        broker.deliver = take

        async def add(c: Recorder, f: str) -> None:
            calls[(c.name, f)] += 1
            mine = calls[(c.name, f)]
            await hub.add(f, c)
            if calls[(c.name, f)] == mine:  # no remove (or add) called meanwhile
                live.setdefault((c.name, f), len(published))

        async def remove(c: Recorder, f: str) -> None:
            calls[(c.name, f)] += 1
            live.pop((c.name, f), None)
            await hub.remove(f, c)

        for op, i, arg in ops:
            if op == "add":
                used[churn[i].name].add(arg)
                tasks.append(asyncio.create_task(add(churn[i], arg)))
            elif op == "remove":
                tasks.append(asyncio.create_task(remove(churn[i], arg)))
            elif op == "publish":
                broker.publish(TOPICS[i], len(published))
                published.append(TOPICS[i])
            elif op == "take":
                take(i)
            else:
                for _ in range(i):  # let the hub's tasks run that many loop turns
                    await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        take(len(broker.queue))

        for n, topic in enumerate(published):
            want = int(any(matches(f, topic) for f in steady))
            assert got[("steady", n)] == want, (n, topic, broker.packets)
            for c in churn:
                assert got[(c.name, n)] <= 1, (c.name, n, topic, broker.packets)
                if got[(c.name, n)]:
                    assert any(matches(f, topic) for f in used[c.name])
                if (c.name, n) in owed:
                    assert got[(c.name, n)] == 1, (c.name, n, topic, broker.packets)

        # when everything is over, the broker holds nothing the hub does not need
        for c in churn:
            for f in FILTERS:
                await hub.remove(f, c)
        for f in steady:
            await hub.remove(f, stable)
        assert broker.subs == {}

    asyncio.run(run())


def test_plain_filters_take_their_identifier_before_an_overlapping_one_arrives() -> None:
    hub, broker = new_hub("5-combined")

    async def run() -> None:
        a, b = Recorder("a", Counter()), Recorder("b", Counter())
        await hub.add("telemetry/d1/+", a)
        await hub.add("telemetry/d2/+", a)
        assert broker.subs == {"telemetry/d1/+": None, "telemetry/d2/+": None}  # overlap nothing
        await hub.add("telemetry/+/m1", b)
        d1 = hub._routes.get("telemetry/d1/+")
        d2 = hub._routes.get("telemetry/d2/+")
        m1 = hub._routes.get("telemetry/+/m1")
        assert d1 is not None and d2 is not None and m1 is not None
        assert broker.subs == {
            "telemetry/d1/+": d1.sid,
            "telemetry/d2/+": d2.sid,
            "telemetry/+/m1": m1.sid,
        }
        # resubscribed with their identifiers before the overlapping filter was subscribed
        assert [p[1] for p in broker.packets[-3:]] == [
            "telemetry/d1/+",
            "telemetry/d2/+",
            "telemetry/+/m1",
        ]

    asyncio.run(run())


@pytest.mark.parametrize("kind", BROKERS)
def test_one_client_with_overlapping_subscriptions_gets_one_frame_for_each(kind: str) -> None:
    hub, broker = new_hub(kind)
    got: Counter[tuple[str, int]] = Counter()
    everything, one_device = Recorder("all", got), Recorder("d1", got)

    async def run() -> None:
        await hub.add("telemetry/+/+", everything)
        await hub.add("telemetry/d1/+", one_device)
        broker.publish("telemetry/d1/m1", 0)
        broker.publish("telemetry/d2/m1", 1)
        drain(hub, broker)

    asyncio.run(run())
    assert got == Counter({("all", 0): 1, ("d1", 0): 1, ("all", 1): 1})


def drain(hub: Hub, broker: FakeBroker) -> None:
    while broker.queue:
        hub._dispatch(broker.pop())


def test_a_message_routed_while_disjoint_filters_are_replaced_comes_once() -> None:
    """MQTT 3.1.1, a broker sending a copy per subscription: all telemetry joins one
    device's subscription, so telemetry/+/+ is subscribed before telemetry/d1/+ goes, and
    what the broker routes in between comes twice from it."""
    hub, broker = new_hub("3.1.1-per-subscription")
    got: Counter[tuple[str, int]] = Counter()
    one, everything = Recorder("d1", got), Recorder("all", got)

    async def run() -> None:
        await hub.add("telemetry/d1/+", one)
        joining = asyncio.create_task(hub.add("telemetry/+/+", everything))
        for n in range(8):
            await asyncio.sleep(0)
            broker.publish("telemetry/d1/m1", n)
        await joining
        assert broker.subs == {"telemetry/+/+": None}
        assert any(p == ("unsubscribe", "telemetry/d1/+", None) for p in broker.packets)
        broker.publish("telemetry/d1/m1", 8)
        drain(hub, broker)

    asyncio.run(run())
    assert {n for (name, n), c in got.items() if name == "d1" and c == 1} == set(range(9))
    assert max(got.values()) == 1


def test_a_filter_overlapping_one_the_broker_still_holds_gets_an_identifier() -> None:
    """telemetry/+/m1 goes out of use while telemetry/d1/+ comes in: until the broker has
    dropped the first (and its copies are handled) the second may not be plain, or a copy
    without identifier could not tell which of them it came through."""
    hub, broker = new_hub("5-per-subscription")
    got: Counter[tuple[str, int]] = Counter()
    leaving, coming = Recorder("leaving", got), Recorder("coming", got)

    async def run() -> None:
        await hub.add("telemetry/+/m1", leaving)
        assert broker.subs == {"telemetry/+/m1": None}
        await asyncio.gather(
            hub.remove("telemetry/+/m1", leaving), hub.add("telemetry/d1/+", coming)
        )
        route = hub._routes.get("telemetry/d1/+")
        assert route is not None and broker.subs == {"telemetry/d1/+": route.sid}
        broker.publish("telemetry/d1/m1", 0)
        drain(hub, broker)
        # once that is settled, a filter overlapping nothing is plain again
        await hub.add("telemetry/d2/+", coming)
        assert broker.subs["telemetry/d2/+"] is None
        broker.publish("telemetry/d2/m1", 1)
        drain(hub, broker)

    asyncio.run(run())
    assert got == Counter({("coming", 0): 1, ("coming", 1): 1})
