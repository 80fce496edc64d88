"""Delivering a stored timeline entry to the devices that should see it.

Write fan-out: each member's inbox got the entry; every device of those members gets an
``event`` frame with its user's inbox seq. Read fan-out: the entry is stored once; online
members get the same ``notice`` frame (``group_message``, serialized once for all) and
pull from the group timeline on gaps. Either way the store already holds the entry, so a
lost push costs latency, never the message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from yim.services.wire import message_json
from yim.storage.records import SendResult

if TYPE_CHECKING:
    from yim.services.context import Context, Device


def publish_entry(node: Context, result: SendResult, origin: Device | None = None) -> None:
    if result.duplicate:
        return
    payload = message_json(result.message)
    if result.members_changed:
        node.rosters.apply(result.message)
        node.bus.roster_changed(result.message.conv_id)  # other nodes' cached rosters
    if result.deliveries:
        node.bus.publish_entry(result.deliveries, payload, origin)
    if result.events:
        node.service.publish(result.events)
    if result.fanout == "read":
        skip = {uid for uid, _seq in result.deliveries}  # got it through their inbox just now
        node.rosters.push_notice(result.message.conv_id, "group_message", payload, origin, skip)
