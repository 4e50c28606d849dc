"""docs/protocol.md (the prose) and docs/asyncapi.json (the schema) name the same messages:
per WebSocket endpoint, the types in section 8's table are the types of that channel's
operations; the tables of sections 3-5 name only types of ``/ws`` and every one of them; and
section 2 names the same MQTT topics as the document's MQTT channels."""

from __future__ import annotations

import re

import pytest

from tests.contract.schemas import ROOT, doc, message_type, operation_messages

PROSE = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")


def section(start: str, end: str) -> str:
    i = PROSE.index(start)
    return PROSE[i : PROSE.index(end, i)]


def named_types(text: str) -> set[str]:
    """Message types named in ``text``: a backticked word, or ``"type": "x"`` in a span."""
    words = set(re.findall(r"`([a-z][a-z0-9_-]*)`", text))
    return words | set(re.findall(r'"type": "([a-z][a-z0-9_-]*)"', text))


def ws_channels() -> dict[str, str]:
    return {
        ch["address"]: key
        for key, ch in doc()["channels"].items()
        if ch["servers"][0]["$ref"] == "#/servers/ws"
    }


def types_of(channel: str, action: str) -> set[str]:
    return {str(message_type(n)) for n in operation_messages(channel, action)}


def endpoint_table() -> dict[str, tuple[set[str], set[str]]]:
    rows = {}
    for line in section("## 8.", "### 8.1").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`/"):
            rows[cells[0].strip("`")] = (named_types(cells[2]), named_types(cells[3]))
    return rows


def test_section_8_lists_every_endpoint_of_the_document() -> None:
    assert set(endpoint_table()) == set(ws_channels())


@pytest.mark.parametrize("address", sorted(ws_channels()))
def test_section_8_names_the_types_of_each_endpoint(address: str) -> None:
    channel = ws_channels()[address]
    sends, gets = endpoint_table()[address]
    assert sends == types_of(channel, "receive"), f"{address}: what the client sends"
    assert gets == types_of(channel, "send"), f"{address}: what the server sends"


def _first_column(table_heading: str, end: str) -> set[str]:
    out: set[str] = set()
    for line in section(table_heading, end).splitlines():
        if line.startswith("| `") or line.startswith('| `{"type"'):
            out |= named_types(line.split("|")[1])
    return out


def test_sections_3_to_5_name_exactly_the_types_of_ws() -> None:
    prose = section("## 3.", "## 6.")
    client = types_of("ws_bridge", "receive")
    server = types_of("ws_bridge", "send")
    assert _first_column("### Client to server", "### Server to client") <= client
    assert _first_column("### Server to client", "### Errors") <= server
    rules = section("Rule messages (admin scope)", "`rule_id` may be left out")
    assert set(re.findall(r'"type": "([a-z_]+)"', rules)) <= client
    missing = (client | server) - named_types(prose)
    assert not missing, f"in docs/asyncapi.json for /ws, not in docs/protocol.md 3-5: {missing}"


def _topic_shape(topic: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", topic)


def test_section_2_names_the_mqtt_channels() -> None:
    prose = section("## 2.", "## 3.")
    named = {_topic_shape(t) for t in re.findall(r"`([a-z-]+/[^`\s]*)`", prose)}
    documented = {
        _topic_shape(ch["address"])
        for ch in doc()["channels"].values()
        if ch["servers"][0]["$ref"] == "#/servers/mqtt"
    }
    assert documented <= named, f"not in docs/protocol.md section 2: {documented - named}"
    tables = {
        _topic_shape(line.split("`")[1])
        for line in prose.splitlines()
        if line.startswith("| `") and "/" in line.split("|")[1]
    }
    assert tables <= documented, f"not in docs/asyncapi.json: {tables - documented}"
