"""`telemetry-bridge mappings`: the firmware formats the ingest reads (ingest/mapped.py).

Mappings live in the ``mappings`` table; every change is announced by its trigger (NOTIFY
``mappings_changed``) and each running ingest reloads its mappings within about a second,
subscribing to new topics and leaving removed ones, without a restart. ``list`` and ``test``
also see the mappings of ``BRIDGE_MAPPINGS`` and ``BRIDGE_MAPPINGS_FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from bridge import console
from ingest.mapped import checked_readings, checked_statuses
from ingest.mapping_source import (
    ConfiguredMappings,
    MappingEntry,
    MappingError,
    engine,
    entry,
)
from ingest.payload import PayloadError
from ingest.wire import iso_ms
from storage.mappings import delete_mapping, load_mappings, set_mapping_enabled, upsert_mapping
from storage.pool import connect


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser(
        "mappings",
        help="list, enable, add, test or remove mappings of firmware topics and payloads",
        description="Mappings let devices publish in their firmware's own format (Tasmota, "
        "Shelly Gen2, zigbee2mqtt, ESPHome, Sparkplug B, InfluxDB line protocol). Changes apply "
        "to the running ingests within about a second.",
        epilog="example: telemetry-bridge mappings enable tasmota; telemetry-bridge mappings test "
        'tasmota --topic tele/kitchen/SENSOR --payload \'{"ENERGY": {"Power": 42}}\'',
    )
    actions = cmd.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="every mapping and where it comes from")
    actions.add_parser("profiles", help="the built-in profiles")
    enable = actions.add_parser(
        "enable", help="switch a built-in profile on (or a disabled mapping on again)"
    )
    enable.add_argument("profile", help="a built-in profile, or the name of a stored mapping")
    enable.add_argument("--name", help="the mapping's name (default: the profile's)")
    enable.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="a profile option"
    )
    add = actions.add_parser("add", help="add or replace a mapping from a TOML spec")
    add.add_argument("name")
    add.add_argument("--file", type=Path, required=True, help="the spec (or profile = ...)")
    disable = actions.add_parser("disable", help="switch a stored mapping off (kept)")
    disable.add_argument("name")
    remove = actions.add_parser("remove", help="delete a stored mapping")
    remove.add_argument("name")
    test = actions.add_parser("test", help="show what a message would store, storing nothing")
    test.add_argument("name", help="a mapping (stored, from the file or env) or a profile")
    test.add_argument("--topic", required=True, help="as the device publishes it")
    test.add_argument("--payload", required=True, help="the payload (text)")


def parse_options(items: list[str]) -> dict[str, str]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MappingError(f"--option {item!r}: expected KEY=VALUE")
        options[key.strip()] = value
    return options


def _validated(item: MappingEntry) -> list[str]:
    """Build the mapping alone (the engine checks it); its MQTT filters."""
    return engine().build([item]).filters()


async def run(
    args: argparse.Namespace,
    database_url: str,
    *,
    profiles: str = "",
    file: Path | None = None,
    out: TextIO,
) -> int:
    if args.action == "profiles":
        t = console.table(("profile", "description"))
        for name, text in sorted(engine().profiles().items()):
            t.add_row(name, text)
        console.print_table(out, t)
        return 0
    conn = await connect(database_url)
    try:
        return await _run(args, conn, profiles, file, out)
    finally:
        await conn.close()


async def _run(
    args: argparse.Namespace, conn: Any, profiles: str, file: Path | None, out: TextIO
) -> int:
    action = args.action
    if action == "list":
        rows = await load_mappings(conn)
        others = await ConfiguredMappings(profiles=profiles, file=file).entries()
        if not rows and not others:
            out.write("no mappings\n")
            return 0
        t = console.table(("name", "reads", "enabled", "origin", "updated"))
        for r in rows:
            reads = r["profile"] or "spec"
            t.add_row(r["name"], reads, "yes" if r["enabled"] else "no", "database",
                      r["updated_at"].strftime("%Y-%m-%d %H:%M"))  # fmt: skip
        for e in others:
            t.add_row(e.name, e.profile or "spec", "yes", e.origin, "")
        console.print_table(out, t)
        return 0
    if action == "enable":
        name = args.name or args.profile
        options = parse_options(args.option)
        stored = {r["name"]: r for r in await load_mappings(conn)}
        if args.profile in stored and not options and not args.name:
            # a stored mapping on again, as it was (its options kept)
            await set_mapping_enabled(conn, args.profile, True)
            out.write(f"mapping {args.profile} enabled\n")
            return 0
        if args.profile not in engine().profiles():
            known = ", ".join(sorted(engine().profiles()))
            raise MappingError(f"no built-in profile {args.profile!r} (built-in: {known})")
        item = entry(name, {"profile": args.profile, "options": options}, "command line")
        filters = _validated(item)
        await upsert_mapping(conn, name, profile=args.profile, options=options)
        out.write(f"mapping {name} ({args.profile}) enabled: {', '.join(filters)}\n")
        return 0
    if action == "add":
        try:
            table = tomllib.loads(await asyncio.to_thread(args.file.read_text))
        except tomllib.TOMLDecodeError as exc:
            raise MappingError(f"{args.file}: not valid TOML: {exc}") from None
        item = entry(args.name, table, str(args.file))
        filters = _validated(item)
        await upsert_mapping(
            conn, item.name, profile=item.profile, options=item.options, spec=item.spec
        )
        out.write(f"mapping {item.name} saved: {', '.join(filters)}\n")
        return 0
    if action in ("disable", "remove"):
        done = (
            await set_mapping_enabled(conn, args.name, False)
            if action == "disable"
            else await delete_mapping(conn, args.name)
        )
        if not done:
            raise MappingError(f"no stored mapping {args.name!r}")
        out.write(f"mapping {args.name} {action}d\n")
        return 0
    assert action == "test"
    return await _test(args, conn, profiles, file, out)


async def _test(
    args: argparse.Namespace, conn: Any, profiles: str, file: Path | None, out: TextIO
) -> int:
    rows = {r["name"]: r for r in await load_mappings(conn)}
    sources = ConfiguredMappings(profiles=profiles, file=file)
    found = {e.name: e for e in await sources.entries()}
    if args.name in rows:
        row = rows[args.name]
        found[args.name] = MappingEntry(row["name"], row["profile"], row["options"], row["spec"])
    item = found.get(args.name)
    if item is None and args.name in engine().profiles():
        item = MappingEntry(args.name, profile=args.name)
    if item is None:
        raise MappingError(f"no mapping or built-in profile {args.name!r}")
    router = engine().build([item])
    mapping = router.route(args.topic)
    if mapping is None:
        out.write(f"no: mapping {args.name} does not cover {args.topic} "
                  f"(it reads {', '.join(router.filters())})\n")  # fmt: skip
        return 1
    now = datetime.now(UTC)
    try:
        extracted = mapping.extract(args.topic, args.payload.encode(), now)
        readings, _ = checked_readings(
            mapping, extracted, now, max_future=timedelta(hours=1), max_past=timedelta(days=30)
        )
        statuses = checked_statuses(extracted)
    except PayloadError as exc:
        out.write(f"dead letter: {exc.reason}: mapping {mapping.name}: {exc.message}\n")
        return 1
    t = console.table(("device", "metric", "ts", "value", "unit"), right=("value",))
    for r in readings:
        for at, values in r.entries:
            for metric, (value, unit) in values.items():
                t.add_row(r.device_id, metric, iso_ms(at), console.format_value(value),
                          unit or "")  # fmt: skip
    out.write(f"mapping {mapping.name} would store (nothing was stored):\n")
    console.print_table(out, t)
    for device, status, reason in statuses:
        out.write(f"status of {device}: {status} ({reason})\n")
    for note in extracted.notes:
        out.write(f"note: {note}\n")
    return 0
