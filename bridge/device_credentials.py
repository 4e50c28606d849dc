"""`telemetry-bridge add-device ID`: a device's broker credentials and topics.

On the production broker (deploy/mosquitto/mosquitto.conf) the device listener authenticates
devices and checks their topics with mosquitto's dynamic-security plugin; the bridge's own
users stay in the password and acl files of its loopback listeners. The plugin, unlike an
acl_file, checks a subscription when it is made: a device may subscribe only to what it may
read, so it can neither join the ingest's shared subscription ($share/ingest/..., where
mosquitto would hand it a share of every device's readings and then drop them) nor subscribe
to another device's topics.

Each device is a plugin client named by its id, its client id bound to the same id, with one
role ``device:ID`` listing its topics literally: the plugin of mosquitto 2.0.11 (Debian 12)
substitutes no %u or %c in ACL topics. add-device talks to the plugin over MQTT
($CONTROL/dynamic-security/v1) as the plugin's admin, on the device listener (the only one the
plugin is loaded on). Changes apply at once and the plugin saves them to its JSON file.

`telemetry-bridge import-devices` is the upgrade from a device listener with a password file:
offline, it writes those devices, password hashes unchanged, into the plugin's JSON file.

The id is validated first: with + or # it would be a wildcard in the role's ACLs, and / would
make it several topic levels. Names of the bridge's own broker users and client ids
(bridge-ingest, bridge-front, telemetry-bridge-...) are refused: a device's username is its
client id, so such a device could take over the ingest's persistent session. A plugin client
that exists without exactly this device's role (the admin, anything made by hand) is never
modified.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import ssl
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bridge.profile_acls import PROFILE_TOPICS, profile_acls
from ingest import names
from ingest.mqtt import MqttEndpoint

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
ROLE_PREFIX = "device:"
ADMIN_URL_ENV = "BRIDGE_DYNSEC_URL"


class DynsecError(ValueError):
    """The broker's dynamic-security plugin could not be reached or refused a command."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "add-device",
        help="create a device's MQTT credentials, or replace its password (dynamic security)",
        description="Create a device at the broker's dynamic-security plugin (deploy/mosquitto: "
        "the device listener) with a new random password (or --password) and print it: the "
        "device id is the username and the client id, and its role allows only its own "
        "topics. For a device that exists, set the new password and rewrite its role. "
        "Takes effect at once, no reload. Connects as the plugin's admin: "
        f"{ADMIN_URL_ENV}=mqtts://ADMIN:PASSWORD@BROKER:8883 (or --admin-url).",
        epilog=f"example: {ADMIN_URL_ENV}=mqtts://dynsec-admin:...@broker.example.com:8883 "
        "telemetry-bridge add-device dev-0001 --cafile /etc/mosquitto/certs/ca.crt",
    )
    p.add_argument("device_id")
    p.add_argument("--password", help="use this password instead of a random one")
    p.add_argument(
        "--admin-url",
        help=f"the device listener as the plugin's admin (default: ${ADMIN_URL_ENV})",
    )
    p.add_argument("--cafile", type=Path, help="CA certificate of the broker's TLS listener")
    p.add_argument(
        "--profile",
        action="append",
        default=[],
        choices=sorted(PROFILE_TOPICS),
        help="also allow the topics of this firmware's mapping profile (repeatable): e.g. "
        "tasmota lets device ID publish tele/ID/+ and stat/ID/+ and read cmnd/ID/+",
    )

    imp = sub.add_parser(
        "import-devices",
        help="move the devices of a mosquitto password file into the dynamic-security file",
        description="Upgrade from a device listener with password_file + acl_file: write each "
        "device of PASSWD (mosquitto_passwd's $7$ hashes, as mosquitto 2.0 writes them) with "
        "its password hash unchanged and its role into the dynamic-security plugin's JSON "
        "file (made by `mosquitto_ctrl dynsec init`). Offline: run it while mosquitto is "
        "stopped (the plugin reads the file only at start and rewrites it on every change). "
        "Entries it cannot import (invalid or reserved ids, older $6$ hashes, ids already "
        "in the file) are listed and left out.",
        epilog="example: telemetry-bridge import-devices /etc/mosquitto/passwd "
        "--dynsec-file /var/lib/mosquitto/dynsec/dynamic-security.json",
    )
    imp.add_argument("passwd", type=Path)
    imp.add_argument("--dynsec-file", type=Path, required=True)


def device_role(device_id: str) -> str:
    return f"{ROLE_PREFIX}{device_id}"


def device_acls(
    device_id: str, topic_prefix: str = "", profiles: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The ACLs of a device's role (PROTOCOL.md section 2), and of the topics of each mapping
    profile in ``profiles`` (bridge/profile_acls.py). ``device_id`` is used as is: callers
    validate it. A device subscribes to exactly what it may receive."""
    base = f"{topic_prefix}/devices/{device_id}" if topic_prefix else f"devices/{device_id}"
    send = ("telemetry", "status", "logs", "commands/+/result")
    read = ("commands/+", "errors")
    acls = [{"acltype": "publishClientSend", "topic": f"{base}/{t}", "allow": True} for t in send]
    for t in read:
        for acltype in ("subscribePattern", "publishClientReceive"):
            acls.append({"acltype": acltype, "topic": f"{base}/{t}", "allow": True})
    for profile in profiles:
        acls += profile_acls(profile, device_id, topic_prefix)
    return acls


def dynsec_call(
    admin_url: str,
    commands: list[dict[str, Any]],
    *,
    cafile: Path | None = None,
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """Send ``commands`` to the dynamic-security plugin in one message (the broker applies
    them together) and return one response per command, in order."""
    endpoint = MqttEndpoint.from_url(admin_url)
    tag = uuid.uuid4().hex
    tagged = [{**c, "correlationData": f"{tag}-{i}"} for i, c in enumerate(commands)]
    responses: dict[str, dict[str, Any]] = {}
    problem: list[str] = []
    done = threading.Event()

    def fail(text: str) -> None:
        problem.append(text)
        done.set()

    def on_connect(client: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            fail(f"the broker refused the admin login ({rc})")
        else:
            client.subscribe(RESPONSE_TOPIC, 1)

    def on_subscribe(client: paho.Client, _u: Any, _m: Any, codes: list[Any], _p: Any) -> None:
        if codes[0].is_failure:
            fail(f"not allowed to read {RESPONSE_TOPIC}: is this user the plugin's admin?")
        else:
            client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)

    def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            answers = json.loads(msg.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            return
        for answer in answers:
            if isinstance(answer, dict) and str(answer.get("correlationData", "")).startswith(tag):
                responses[answer["correlationData"]] = answer
        if len(responses) == len(tagged):
            done.set()

    def on_disconnect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not done.is_set():
            fail(f"the broker closed the admin connection ({rc})")

    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=names.bridge_client_id("dynsec"),
        protocol=endpoint.paho_protocol,
        reconnect_on_failure=False,
    )
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls:
        client.tls_set_context(ssl.create_default_context(cafile=cafile))
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_disconnect = on_disconnect
    try:
        client.connect(endpoint.host, endpoint.port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        raise DynsecError(f"cannot reach {endpoint.redacted()}: {exc}") from None
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise DynsecError(
                f"no answer from the dynamic-security plugin at {endpoint.redacted()} within "
                f"{timeout:g} s: is the plugin loaded on that listener?"
            )
        if problem:
            raise DynsecError(f"{endpoint.redacted()}: {problem[0]}")
    finally:
        client.disconnect()
        client.loop_stop()
    return [responses[c["correlationData"]] for c in tagged]


def _check(responses: list[dict[str, Any]], tolerated: set[tuple[str, str]]) -> None:
    for answer in responses:
        error = answer.get("error")
        if error and (answer.get("command"), error) not in tolerated:
            raise DynsecError(f"dynamic security: {answer.get('command')}: {error}")


def put_device(
    admin_url: str,
    device_id: str,
    password: str,
    *,
    topic_prefix: str = "",
    cafile: Path | None = None,
    profiles: Sequence[str] = (),
) -> None:
    """Create the device's client and role, or for an existing device set its password and
    rewrite its role. ``device_id`` is used as is (add_device validates it)."""
    role = device_role(device_id)
    [found] = dynsec_call(
        admin_url, [{"command": "getClient", "username": device_id}], cafile=cafile
    )
    if found.get("error") == "Client not found":
        create = "createClient"
    elif found.get("error"):
        _check([found], set())
        return
    else:
        client = found.get("data", {}).get("client", {})
        roles = [r.get("rolename") for r in client.get("roles", [])]
        if roles != [role] or client.get("groups"):
            raise DynsecError(
                f"{device_id!r} exists at the broker and is not a device added by add-device "
                f"(roles {roles}, groups {[g.get('groupname') for g in client.get('groups', [])]}"
                "): left unchanged"
            )
        create = "modifyClient"
    # One message: the broker applies the list at once, so a connected device is never seen
    # without its role. Deleting the role first makes its ACLs exactly the ones below.
    responses = dynsec_call(
        admin_url,
        [
            {"command": "deleteRole", "rolename": role},
            {
                "command": "createRole",
                "rolename": role,
                "textname": f"topics of device {device_id} (telemetry-bridge add-device)",
                "acls": device_acls(device_id, topic_prefix, profiles),
            },
            {
                "command": create,
                "username": device_id,
                "password": password,
                "clientid": device_id,
                "roles": [{"rolename": role}],
            },
        ],
        cafile=cafile,
    )
    _check(responses, {("deleteRole", "Role not found")})


def add_device(
    device_id: str,
    *,
    admin_url: str | None = None,
    password: str | None = None,
    topic_prefix: str = "",
    cafile: Path | None = None,
    profiles: Sequence[str] = (),
) -> str:
    """Returns the password; raises ValueError with what to fix."""
    device_id = names.device_id(device_id)
    if names.is_reserved_for_bridge(device_id):
        raise ValueError(
            f"device id {device_id!r} is reserved for the bridge's own broker users and "
            f"client ids ({', '.join(names.BRIDGE_BROKER_USERS)}, "
            f"{names.BRIDGE_CLIENT_ID_PREFIX}...): choose another"
        )
    device_acls(device_id, topic_prefix, profiles)  # refuses what the ACLs cannot protect
    admin_url = admin_url or os.environ.get(ADMIN_URL_ENV)
    if not admin_url:
        raise ValueError(
            f"set {ADMIN_URL_ENV}=mqtts://ADMIN:PASSWORD@BROKER:8883 (the device listener, as "
            "the dynamic-security plugin's admin) or pass --admin-url"
        )
    password = password or secrets.token_urlsafe(24)
    put_device(
        admin_url,
        device_id,
        password,
        topic_prefix=topic_prefix,
        cafile=cafile,
        profiles=profiles,
    )
    return password


def import_passwd(
    passwd: Path, dynsec_file: Path, *, topic_prefix: str = ""
) -> tuple[list[str], list[str]]:
    """Add the devices of a mosquitto password file to a dynamic-security JSON file (offline).
    Returns (imported ids, "id: why" for each line left out)."""
    config = json.loads(dynsec_file.read_text())
    clients = config.setdefault("clients", [])
    roles = config.setdefault("roles", [])
    taken = {c.get("username") for c in clients} | {r.get("rolename") for r in roles}
    imported: list[str] = []
    skipped: list[str] = []
    for line in passwd.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        user, _, hashed = line.partition(":")
        fields = hashed.split("$")  # "", "7", iterations, salt, hash
        if not names.is_device_id(user) or names.is_reserved_for_bridge(user):
            skipped.append(f"{names.safe_excerpt(user)}: invalid or reserved as a device id")
        elif len(fields) != 5 or fields[1] != "7" or not fields[2].isdigit():
            skipped.append(f"{user}: not a $7$ (PBKDF2-SHA512) hash: set a new password")
        elif user in taken or device_role(user) in taken:
            skipped.append(f"{user}: already in {dynsec_file}")
        else:
            roles.append(
                {
                    "rolename": device_role(user),
                    "textname": f"topics of device {user} (telemetry-bridge import-devices)",
                    "acls": device_acls(user, topic_prefix),
                }
            )
            clients.append(
                {
                    "username": user,
                    "clientid": user,
                    "password": fields[4],
                    "salt": fields[3],
                    "iterations": int(fields[2]),
                    "roles": [{"rolename": device_role(user)}],
                }
            )
            taken.add(user)
            imported.append(user)
    fresh = dynsec_file.with_name(dynsec_file.name + ".import")
    fresh.write_text(json.dumps(config, indent="\t"))
    shutil.copymode(dynsec_file, fresh)
    with contextlib.suppress(PermissionError):  # keep the owner when run as root
        stat = dynsec_file.stat()
        os.chown(fresh, stat.st_uid, stat.st_gid)
    fresh.replace(dynsec_file)
    return imported, skipped
