"""The CSV export budget (bridge.exports)."""

from __future__ import annotations

from bridge.exports import ExportSlots


def test_per_subject_then_per_process() -> None:
    slots = ExportSlots(max_total=2, max_per_subject=1)
    assert slots.acquire("alice") is None
    again = slots.acquire("alice")
    assert again is not None and again.status == 429 and again.retry_after_s > 0
    assert slots.acquire("bob") is None
    full = slots.acquire("carol")
    assert full is not None and full.status == 503 and "2 CSV exports" in full.message
    assert slots.in_use == 2  # refusals took nothing
    slots.release("alice")
    assert slots.acquire("carol") is None
    slots.release("bob")
    slots.release("carol")
    assert slots.in_use == 0 and slots.acquire("alice") is None


def test_several_per_subject_when_configured() -> None:
    slots = ExportSlots(max_total=3, max_per_subject=2)
    assert slots.acquire("a") is None and slots.acquire("a") is None
    refused = slots.acquire("a")
    assert refused is not None and refused.status == 429
    assert slots.acquire("b") is None
    refused = slots.acquire("b")
    assert refused is not None and refused.status == 503
