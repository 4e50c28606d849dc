"""``telemetry-bridge broker-users``: the broker usernames a deployment's processes log in with.

With ``?username=client-id`` in BRIDGE_MQTT_URL each connection's username is its client id
(bridge/identities.py), so the broker's password file needs one line per connection. This
prints them, one per line, for a loop over ``mosquitto_passwd`` (deploy/README.md).
"""

from __future__ import annotations

import argparse
from typing import TextIO

from bridge.identities import broker_users

COMPONENTS = ("ingest", "front", "scheduler", "tool")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "broker-users",
        help="print the broker usernames (= client ids) of the bridge's processes",
        description="Print, one per line, the usernames the units of deploy/systemd log in "
        "with when BRIDGE_MQTT_URL has ?username=client-id: telemetry-bridge-ingest@N, "
        "telemetry-bridge-front@N, the scheduler, and command-line tools (doctor, alerts ack).",
        epilog="example: for u in $(telemetry-bridge broker-users ingest --instances 2); do "
        'mosquitto_passwd -b /etc/mosquitto/bridge-ingest.passwd "$u" "$SECRET"; done',
    )
    p.add_argument("component", choices=COMPONENTS)
    p.add_argument(
        "--instances", type=int, default=1, help="units of the component (@1 .. @N; default 1)"
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    if not 1 <= args.instances <= 99:
        raise ValueError("--instances: 1 to 99")
    for name in broker_users(args.component, args.instances):
        print(name, file=out)
    return 0
