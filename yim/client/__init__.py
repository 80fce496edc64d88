"""The Python SDK of yim: ``from yim.client import Client, login, register``.

:mod:`yim.client.core` is its inbox algorithm without I/O, for other drivers to reuse."""

from yim.client.core import ClientCore, GroupItem, InboxItem
from yim.client.sdk import (
    ApiError,
    Client,
    ClientClosed,
    ConnectionLost,
    Endpoint,
    HttpApi,
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
    "ClientCore",
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
