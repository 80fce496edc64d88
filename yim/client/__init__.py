"""The Python SDK of yim: ``from yim.client import Client, login, register``."""

from yim.client.sdk import (
    ApiError,
    Client,
    ClientClosed,
    ConnectionLost,
    Endpoint,
    GroupItem,
    HttpApi,
    InboxItem,
    SessionEnded,
    YimClientError,
    login,
    parse_endpoint,
    register,
)
from yim.protocol.close import CLOSE_REPLACED, CLOSE_REVOKED, FATAL_CLOSE_CODES

__all__ = [
    "CLOSE_REPLACED",
    "CLOSE_REVOKED",
    "FATAL_CLOSE_CODES",
    "ApiError",
    "Client",
    "ClientClosed",
    "ConnectionLost",
    "Endpoint",
    "GroupItem",
    "HttpApi",
    "InboxItem",
    "SessionEnded",
    "YimClientError",
    "login",
    "parse_endpoint",
    "register",
]
