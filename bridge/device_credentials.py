"""`telemetry-bridge add-device ID`: credentials for one device in mosquitto's password file.

The username is the device id, which the broker's pattern ACLs (deploy/mosquitto/acl) turn
into "this device may publish only under devices/ID/...", and which the device listener of
deploy/mosquitto/mosquitto.conf also makes the device's client id. The id is validated first:
an id with + # / would match nothing in the ACLs, and one with spaces or quotes has no
business in a password file. Names of the bridge's own broker users and client ids
(bridge-ingest, bridge-front, telemetry-bridge-...) are refused: as a device's username they
would get that user's ACL lines or that client id, i.e. the ingest's persistent session.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ingest import names

DEFAULT_PASSWORD_FILE = Path("/etc/mosquitto/passwd")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "add-device",
        help="create or replace a device's MQTT credentials (mosquitto password file)",
        description="Add a device to the password file of mosquitto's device listener "
        "(deploy/mosquitto: /etc/mosquitto/passwd; the bridge's own users are in "
        "bridge.passwd) with a new random password (or --password) and print it. The device "
        "id is the username and, on that listener, the client id. Reload mosquitto "
        "afterwards (systemctl reload mosquitto, or kill -HUP) so it reads the file again.",
        epilog="example: telemetry-bridge add-device dev-0001 "
        "--password-file /etc/mosquitto/passwd",
    )
    p.add_argument("device_id")
    p.add_argument("--password-file", type=Path, default=DEFAULT_PASSWORD_FILE)
    p.add_argument("--password", help="use this password instead of a random one")


def add_device(device_id: str, password_file: Path, password: str | None = None) -> str:
    """Returns the password; raises ValueError with what to fix."""
    device_id = names.device_id(device_id)
    if names.is_reserved_for_bridge(device_id):
        raise ValueError(
            f"device id {device_id!r} is reserved for the bridge's own broker users and "
            f"client ids ({', '.join(names.BRIDGE_BROKER_USERS)}, "
            f"{names.BRIDGE_CLIENT_ID_PREFIX}...): choose another"
        )
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        raise ValueError(
            "mosquitto_passwd not found: install mosquitto (apt-get install mosquitto)"
        )
    password = password or secrets.token_urlsafe(24)
    if not password_file.exists():
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.touch(mode=0o640)
    done = subprocess.run(
        [tool, "-b", str(password_file), device_id, password],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise ValueError(f"mosquitto_passwd failed: {done.stderr.strip() or done.stdout.strip()}")
    return password
