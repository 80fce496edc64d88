"""A Matrix push gateway stand-in: POST /_matrix/push/v1/notify checked against the spec's schema
(unknown fields refused so a misspelt one shows), answering `rejected` for pushkeys it has dropped."""

from __future__ import annotations

from typing import Literal

import msgspec
from aiohttp import web

from tests.push_standins.common import BUSY_RETRY_AFTER, DOWN_RETRY_AFTER, Modes


class _Counts(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    unread: int | None = None
    missed_calls: int | None = None


class _Device(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    app_id: str
    pushkey: str
    pushkey_ts: int | None = None
    data: dict[str, object] | None = None
    tweaks: dict[str, object] | None = None


class _Notification(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    devices: list[_Device]
    event_id: str | None = None
    room_id: str | None = None
    type: str | None = None
    sender: str | None = None
    sender_display_name: str | None = None
    room_name: str | None = None
    room_alias: str | None = None
    user_is_target: bool | None = None
    prio: Literal["high", "low"] | None = None
    content: dict[str, object] | None = None
    counts: _Counts | None = None


class _Notify(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    notification: _Notification


def _bad(why: str) -> web.Response:
    return web.json_response({"errcode": "M_BAD_JSON", "error": why}, status=400)


class GatewayStandin:
    def __init__(self) -> None:
        self.m = Modes()
        self.app = web.Application()
        self.app.router.add_post("/_matrix/push/v1/notify", self.notify)

    async def notify(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return _bad(self.m.refuse("Content-Type is not application/json"))
        try:
            n = msgspec.json.decode(await request.read(), type=_Notify).notification
        except msgspec.DecodeError as e:
            return _bad(self.m.refuse(f"not a notify body: {e}"))
        if not n.devices:
            return _bad(self.m.refuse("no devices"))
        if (n.content is not None or n.type is not None) and not (n.event_id and n.room_id):
            return _bad(self.m.refuse("an event notification without event_id and room_id"))
        modes = {self.m.mode(d.pushkey) for d in n.devices}
        if "busy" in modes:
            return web.json_response({}, status=429, headers={"Retry-After": BUSY_RETRY_AFTER})
        if "down" in modes:
            return web.json_response({}, status=503, headers={"Retry-After": DOWN_RETRY_AFTER})
        if "error" in modes:
            return web.json_response({}, status=500)
        if "slow" in modes:
            await self.m.stall()
        rejected = [d.pushkey for d in n.devices if self.m.mode(d.pushkey) == "gone"]
        self.m.accepted.append({"notification": msgspec.to_builtins(n)})
        return web.json_response({"rejected": rejected})
