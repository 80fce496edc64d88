from typing import Any

from aiohttp import web

NODE_KEY: web.AppKey[Any] = web.AppKey("node")
