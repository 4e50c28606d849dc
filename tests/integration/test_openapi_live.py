"""The running front against its own OpenAPI document, with schemathesis.

A real front (with ingest, database and broker) holding a few devices, readings and alerts
publishes /api/openapi.json; schemathesis generates requests for every operation from it, valid
ones and invalid ones, sends them with a real token, and fails on any 5xx, any answer that does
not match the documented schema, any undocumented status code or content type, and any
documented header that is wrong.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter, defaultdict
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from bridge import openapi
from tests.helpers import wait_until
from tests.integration.frontkit import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    ignored_auth,
]
# per operation and generation mode; BRIDGE_TEST_OPENAPI_EXAMPLES=500 for a longer hunt
# An invalid request may also be refused for its size (414 past the 8 KiB request line).
REFUSALS = [400, 401, 403, 404, 414, 422, 431]
MAX_EXAMPLES = int(os.environ.get("BRIDGE_TEST_OPENAPI_EXAMPLES", "40"))
DEVICES = ("sensor-1", "sensor-2", "pump:7")


async def seed(stack: Stack, database_url: str) -> None:
    for i, device in enumerate(DEVICES):
        stack.reading(device, temperature=20.0 + i, humidity=40.5)
    db = await asyncpg.connect(database_url)
    try:

        async def stored() -> bool:
            count = await db.fetchval("SELECT count(*) FROM latest_values")
            return int(count) == 2 * len(DEVICES)

        await wait_until(stored)
        await db.execute(
            "INSERT INTO alerts (alert_id, rule_id, device_id, metric, severity, title, message, "
            "state, threshold_value, actual_value, created_at, updated_at, acknowledged_at, "
            "acknowledged_by) VALUES "
            "('al_1', 'r1', 'sensor-1', 'temperature', 'high', 'hot', 'too hot', 'active', "
            "  30, 31.5, now(), now(), NULL, NULL),"
            "('al_2', 'r1', 'sensor-2', 'temperature', 'info', 'warm', 'warm', 'acknowledged', "
            "  25, 25.5, now() - interval '1 hour', now(), now(), 'alice')"
        )
    finally:
        await db.close()


def valid_on_the_wire(path: str, request: Any, token: str) -> bool:
    """Whether a request generated as invalid is valid as sent: its ``null`` or ``5`` went
    out as the text "null" or "5", which can be a fine metric name or device id."""
    if request.headers.get("Authorization") != f"Bearer {token}":
        return False
    declared = {
        p["name"]: p
        for p in openapi.document()["paths"][path]["get"].get("parameters", [])
        if p["in"] == "query"
    }
    sent = parse_qs(urlsplit(request.url).query)
    if set(sent) - set(declared):
        return False
    for name, param in declared.items():
        if name not in sent:
            if param["required"]:
                return False
            continue
        schema = param["schema"]
        value: Any = sent[name] if schema.get("type") == "array" else sent[name][0]
        if len(sent[name]) > 1 and schema.get("type") != "array":
            return False
        if schema.get("type") == "integer" and value.isascii() and value.isdigit():
            value = int(value)
        if not Draft202012Validator(schema).is_valid(value):
            return False
    return True


def fuzz(
    base_url: str, token: str, visible: list[str]
) -> tuple[list[str], dict[str, Counter[int]]]:
    """Every operation, valid and invalid requests: the failures, one line each, and the
    statuses each operation answered with."""
    # the token through the document's security scheme: schemathesis sends it, and leaves
    # it out or spoils it on purpose for invalid requests (a 401 is then expected)
    config = SchemathesisConfig.from_dict(
        {
            "auth": {"openapi": {"bearerAuth": {"bearer": token}}},
            "checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}},
        }
    )
    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json", config=config)
    failures: list[str] = []
    statuses: dict[str, Counter[int]] = defaultdict(Counter)

    def call(case: Any) -> None:
        response = case.call(base_url=base_url, timeout=15)
        statuses[case.operation.label][response.status_code] += 1
        checks = CHECKS
        negative = case.meta is not None and case.meta.generation.mode.is_negative
        if negative and valid_on_the_wire(case.operation.path, response.request, token):
            checks = [c for c in CHECKS if c is not negative_data_rejection]
        case.validate_response(response, checks=checks)

    # the seeded rows, through the schema's own cases: real bodies, not only empty lists
    device = schema["/api/v1/devices/{device_id}"]["GET"]
    telemetry = schema["/api/v1/telemetry"]["GET"]
    bearer = {"Authorization": f"Bearer {token}"}
    explicit = [device.Case(path_parameters={"device_id": d}, headers=bearer) for d in DEVICES]
    explicit += [
        telemetry.Case(
            query={"device_id": ",".join(visible), "from": "-1d", **extra}, headers=bearer
        )
        for extra in ({}, {"bucket": "1h", "fill": "null"}, {"format": "csv"})
    ]
    for case in explicit:
        try:
            call(case)
        except Exception as exc:
            failures.append(f"{case.operation.label} {case.path_parameters} {case.query}: {exc}")

    for result in schema.get_all_operations():
        operation = result.ok()
        # an operation without parameters has no invalid request to make
        modes = [GenerationMode.POSITIVE]
        if list(operation.iter_parameters()):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:

            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                call(case)

            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures, statuses


@pytest.mark.parametrize("claim", [None, ["sensor-*"]], ids=["every-device", "devices-claim"])
async def test_the_front_answers_as_its_openapi_document_says(
    stack: Stack, database_url: str, claim: list[str] | None
) -> None:
    await seed(stack, database_url)
    token = stack.token(scope="devices:read alerts:read telemetry:read", devices=claim)
    base_url = stack.url.replace("ws://", "http://")
    visible = [d for d in DEVICES if claim is None or d.startswith("sensor-")]
    failures, statuses = await asyncio.to_thread(fuzz, base_url, token, visible)
    assert not failures, "\n\n".join(failures)
    # the run reached the handlers' answers, not only their refusals
    for label in ("GET /api/v1/devices", "GET /api/v1/devices/{device_id}", "GET /api/v1/alerts"):
        assert statuses[label][200] > 0, (label, statuses[label])
    telemetry = statuses["GET /api/v1/telemetry"]
    assert telemetry[200] > 0 and telemetry[422] > 0, telemetry
