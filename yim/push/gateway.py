"""The Matrix push gateway protocol (`POST /_matrix/push/v1/notify`), as Sygnal speaks it, over aiohttp.

The gateway's base URL is the operator's setting, never a client's: a pusher only names its app_id
and pushkey, so no client can make the server post to an address of its choosing.
"""

from __future__ import annotations

import aiohttp
import msgspec

from yim.push._common import Gate, clip, read_bounded, ssl_context, status_outcome
from yim.push.types import (
    Delivered,
    Failed,
    GatewayTarget,
    Gone,
    Notification,
    PushConfigError,
    PushOutcome,
    PushSettings,
)

NOTIFY_PATH = "/_matrix/push/v1/notify"


class _Answer(msgspec.Struct):
    rejected: list[str]


def notify_body(target: GatewayTarget, n: Notification) -> bytes:
    """The spec's `notification`: with previews off only ids and counts (the `event_id_only` format)."""
    notification: dict[str, object] = {
        "event_id": n.msg_id,
        "room_id": n.conv_id,
        "prio": "high",
        "counts": {"unread": n.badge},
        "devices": [
            {
                "app_id": target.app_id,
                "pushkey": target.pushkey,
                "pushkey_ts": target.pushkey_ts,
                "data": target.data,
                "tweaks": {},
            }
        ],
    }
    if n.title is not None or n.body is not None:
        notification["type"] = "m.room.message"
        if n.title is not None:
            notification["room_name"] = clip(n.title)
        if n.body is not None:
            notification["content"] = {"msgtype": "m.text", "body": clip(n.body)}
    return msgspec.json.encode({"notification": notification})


class GatewayProvider:
    def __init__(self, settings: PushSettings) -> None:
        if not settings.gateway_url:
            raise PushConfigError("the push gateway needs gateway_url (the base URL of a Sygnal or similar)")
        self.settings = settings
        self.url = settings.gateway_url.rstrip("/") + NOTIFY_PATH
        self.gate = Gate("push gateway", settings)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=settings.max_connections, ssl=ssl_context(settings)),
            timeout=aiohttp.ClientTimeout(total=settings.timeout),
        )

    async def close(self) -> None:
        await self.session.close()

    async def send(self, target: GatewayTarget, notification: Notification) -> PushOutcome:
        body = notify_body(target, notification)
        headers = {"Content-Type": "application/json"}

        async def call() -> PushOutcome:
            async with self.session.post(self.url, data=body, headers=headers, allow_redirects=False) as resp:
                raw = await read_bounded(resp.content.iter_any(), self.settings.max_response_bytes)
                if resp.status != 200:
                    # 404 here is a misconfigured gateway URL, not a gone pusher: nothing maps to Gone
                    return status_outcome(resp.status, resp.headers.get("Retry-After"), "push gateway", frozenset())
            try:
                answer = msgspec.json.decode(raw, type=_Answer)
            except msgspec.DecodeError as e:
                return Failed(f"push gateway answered 200 without a `rejected` list: {e}")
            if target.pushkey in answer.rejected:
                return Gone("push gateway rejected the pushkey")
            return Delivered()

        return await self.gate.run(call, (aiohttp.ClientError, OSError))
