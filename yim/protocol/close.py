"""WebSocket close codes of the protocol (docs/protocol.md §5.4), shared by the node and the SDK.

They live here, at the bottom layer, because both ends of the wire name them: the gateway
closes with them, the bus tells another node's connection to close with them, and the
client decides from them whether reconnecting can help.
"""

from __future__ import annotations

from typing import Final

CLOSE_GOING_AWAY: Final = 1001  # the node is shutting down or fenced: reconnect elsewhere, then sync
CLOSE_TOO_BIG: Final = 1009  # a frame over hard_frame_bytes
CLOSE_AUTH_FAILED: Final = 4001  # the token does not hold
CLOSE_REPLACED: Final = 4002  # the same (user, device_id) authenticated on another connection
CLOSE_REVOKED: Final = 4003  # the session was logged out or its device revoked
CLOSE_IDLE: Final = 4004  # no request frame for idle_timeout_s
CLOSE_AUTH_TIMEOUT: Final = 4005  # no auth within auth_timeout_s of connecting
CLOSE_POLICY: Final = 4006  # the multi-device policy signed this device out (a newer one took its place)
CLOSE_DISABLED: Final = 4007  # an admin disabled the account: every session of it is over
CLOSE_SLOW: Final = 4008  # more than max_send_buffer_bytes queued: catch up with sync

#: A connection closed with one of these is over for good: reconnecting would not help
#: (4002 would kick the other connection of the same device; 4006 would kick the newer device).
FATAL_CLOSE_CODES: Final = frozenset({CLOSE_AUTH_FAILED, CLOSE_REPLACED, CLOSE_REVOKED, CLOSE_POLICY, CLOSE_DISABLED})
