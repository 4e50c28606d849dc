"""The OpenAPI document: valid 3.1, the committed docs/openapi.json is what the code generates,
and the models it is made of say what the handlers' rules say."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pytest
from openapi_spec_validator import validate

from bridge import openapi, rest_models
from bridge.errors import http_error
from bridge.protocol import ClientError
from bridge.rest_models import ErrorBody, TelemetryParams, telemetry_params
from storage import names
from storage.query_spec import QueryError, parse_query

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi.document()
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_the_committed_document_is_the_generated_one() -> None:
    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert committed == openapi.render(), (
        "docs/openapi.json is stale: run python -m bridge.openapi > docs/openapi.json"
    )


def test_every_rest_operation_is_secured_and_documents_its_errors() -> None:
    paths = openapi.document()["paths"]
    for path in ("/api/v1/devices", "/api/v1/devices/{device_id}", "/api/v1/alerts"):
        op = paths[path]["get"]
        assert op["security"] == [{"bearerAuth": []}], path
        assert {"200", "401", "403", "503", "504"} <= set(op["responses"]), path
    telemetry = paths["/api/v1/telemetry"]["get"]
    assert set(telemetry["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    assert {"422", "429"} <= set(telemetry["responses"])
    assert paths["/api/openapi.json"]["get"]["security"] == []


def test_enumerations_follow_the_names_they_stand_for() -> None:
    assert get_args(rest_models.Severity) == names.SEVERITIES
    assert get_args(rest_models.DeviceStatus) == names.DEVICE_STATUSES


def test_error_bodies_are_what_the_error_ladder_sends() -> None:
    response = http_error(ClientError(422, "validation_error", "from is after to"))
    ErrorBody.model_validate_json(response.body)


# Parameters the query spec accepts: the model must accept them too (it runs after the spec).
ACCEPTED: list[dict[str, Any]] = [
    {"device_id": "d1"},
    {"device_id": " d1 , d2 ", "metric": "t,h"},
    {"device_id": ["d1", "d2"], "metric": ["t"]},
    {"devices": "d1", "metrics": "t", "start": "-2h", "end": "now"},
    {"agentId": "d1", "interval": "1m", "aggregation": "max", "fill": "zero"},
    {"device_id": "d1", "from": 1795255200000, "limit": 5},
    {"device_id": "d1", "limit": "10000", "format": "csv", "source": "raw"},
    {"device_id": "d1", "limit": "", "cursor": "", "metric": ""},
    {"device_id": "d1", "type": "query", "id": 7},
]


@pytest.mark.parametrize("params", ACCEPTED)
def test_telemetry_model_accepts_what_the_query_spec_accepts(params: dict[str, Any]) -> None:
    assert telemetry_params(params, NOW) == parse_query(params, NOW)


@pytest.mark.parametrize(
    "params",
    [
        {"device_id": "d1", "colour": "red"},
        {"device_id": "d1", "agg": "median", "bucket": "1m"},
        {"device_id": "d1", "limit": "0"},
        {"device_id": "a/b"},
        {"metric": "t"},
        {"device_id": "d1", "from": "yesterday"},
    ],
)
def test_telemetry_model_refuses_in_the_query_specs_words(params: dict[str, Any]) -> None:
    with pytest.raises(QueryError) as spec_error:
        parse_query(params, NOW)
    with pytest.raises(QueryError) as model_error:
        telemetry_params(params, NOW)
    assert str(model_error.value) == str(spec_error.value)


def test_telemetry_parameters_documented_are_the_models_fields() -> None:
    op = openapi.document()["paths"]["/api/v1/telemetry"]["get"]
    documented = [p["name"] for p in op["parameters"]]
    fields = [f.alias or name for name, f in TelemetryParams.model_fields.items()]
    assert documented == fields
    assert next(p for p in op["parameters"] if p["name"] == "device_id")["required"] is True


def test_the_document_renders_as_json() -> None:
    assert json.loads(openapi.render()) == openapi.document()
