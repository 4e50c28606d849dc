"""Correctly signed tokens with claims of the wrong type or size: 401 with a clear message at
the WebSocket handshake, over REST and in the WebSocket `auth` message; never a 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.limits import FrontLimits
from tests.adversity.httpkit import bearer, http
from tests.integration.frontkit import recv
from tests.stack import SECRET, Stack, front_fixture

pytestmark = pytest.mark.integration

front = pytest.fixture(front_fixture)


def signed(claims_json: str) -> str:
    """An HS256 token over exactly this JSON: PyJWT's encoder refuses some of these claims,
    and the point is what the front does with a token someone else signed."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(claims_json.encode())
    mac = hmac.new(SECRET.encode(), head.encode(), hashlib.sha256).digest()
    return f"{head}.{b64(mac)}"


SOON = int(time.time()) + 3600
BASE = '"sub":"alice","scope":"admin"'
CLAIMS = [
    (f'{{{BASE},"exp":"{SOON}"}}', "exp claim"),
    (f'{{{BASE},"exp":{"9" * 400}}}', "exp claim"),
    (f'{{{BASE},"exp":{SOON},"nbf":"{SOON - 7200}"}}', "nbf claim"),
    (f'{{{BASE},"exp":{SOON},"iat":"{SOON - 7200}"}}', "iat claim"),
    (f'{{"sub":"alice","scope":5,"exp":{SOON}}}', "scope claim"),
    (f'{{{BASE},"devices":5,"exp":{SOON}}}', "devices claim"),
    (f'{{{BASE},"devices":[1],"exp":{SOON}}}', "devices claim"),
    (f'{{"scope":"admin","exp":{SOON}}}', "'sub'"),
    (f'{{"sub":5,"scope":"admin","exp":{SOON}}}', "sub claim"),
    (f'{{{BASE},"exp":{SOON},"pad":"{"x" * 20_000}"}}', "token"),  # huge
]


@pytest.mark.parametrize(("claims", "words"), CLAIMS)
async def test_bad_claims_are_401_everywhere(front: Stack, claims: str, words: str) -> None:
    token = signed(claims)
    huge = len(token) > 8192

    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{front.url}/ws", additional_headers=bearer(token), open_timeout=5)
    response = refused.value.response
    assert response.status_code == 401
    body = orjson.loads(response.body)
    assert body["error"] == "invalid_token" and words in body["message"], body
    if not huge:  # a URL that long is a 414, whatever it carries
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{front.url}/ws?token={token}", open_timeout=5)
        assert refused.value.response.status_code == 401

    answer = await http(front.port, "/api/v1/devices", bearer(token))
    assert answer.status == 401, answer
    assert answer.json()["error"] == "invalid_token" and words in answer.json()["message"]

    async with await front.client() as ws:
        frame = orjson.dumps({"type": "auth", "token": token})
        await ws.send(frame)
        if len(frame) > FrontLimits().preauth_frame_bytes:
            # before authentication frames are small: this one closes the connection (1009)
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            return
        reply = await recv(ws)
        assert reply["type"] == "auth_response" and reply["success"] is False, reply
        assert reply["error"] == "invalid_token" and words in reply["message"], reply
