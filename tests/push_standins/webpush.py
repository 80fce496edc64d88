"""A Web Push service stand-in (RFC 8030): checks the VAPID JWT (RFC 8292) against the key the
subscription was made with, and decrypts the aes128gcm payload (RFC 8291, RFC 8188) with the
subscription's private key, as the browser would. The decryption is written here from the RFCs
with `cryptography`, not with the library the provider encrypts with."""

from __future__ import annotations

import os
import struct
import time

import jwt
import msgspec
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tests.push_standins.common import BUSY_RETRY_AFTER, DOWN_RETRY_AFTER, Modes, b64url, unb64url


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


class Subscription:
    """What a browser keeps for one PushSubscription: its ECDH key pair and auth secret."""

    def __init__(self, name: str, endpoint: str) -> None:
        self.name = name
        self.endpoint = endpoint
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.public_raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.auth = os.urandom(16)

    @property
    def p256dh(self) -> str:
        return b64url(self.public_raw)

    @property
    def auth_b64(self) -> str:
        return b64url(self.auth)

    def decrypt(self, body: bytes) -> bytes:
        """RFC 8291 §3.4 key derivation, then RFC 8188 records; raises ValueError on anything wrong."""
        if len(body) < 21:
            raise ValueError("body shorter than the aes128gcm header")
        salt, rs, idlen = body[:16], struct.unpack("!L", body[16:20])[0], body[20]
        sender_raw = body[21 : 21 + idlen]
        if idlen != 65 or rs < 18:
            raise ValueError("keyid is not the sender's P-256 public key")
        sender = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender_raw)
        ecdh = self.private_key.exchange(ec.ECDH(), sender)
        ikm = _hkdf(self.auth, ecdh, b"WebPush: info\x00" + self.public_raw + sender_raw, 32)
        cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
        nonce = int.from_bytes(_hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12), "big")
        records = body[21 + idlen :]
        out = bytearray()
        for seq, start in enumerate(range(0, len(records), rs)):
            iv = (nonce ^ seq).to_bytes(12, "big")
            plain = AESGCM(cek).decrypt(iv, records[start : start + rs], None).rstrip(b"\x00")
            last = start + rs >= len(records)
            if not plain or plain[-1] != (2 if last else 1):
                raise ValueError("bad record padding delimiter")
            out += plain[:-1]
        return bytes(out)


class WebPushStandin:
    def __init__(self, application_server_key: str) -> None:
        #: the VAPID public key the browser subscribed with; pushes signed by another key are refused
        self.application_server_key = unb64url(application_server_key)
        self.subscriptions: dict[str, Subscription] = {}
        self.m = Modes()
        self.origin = ""
        self.app = web.Application()
        self.app.router.add_post("/push/{name}", self.push)

    def subscribe(self, name: str) -> Subscription:
        sub = Subscription(name, f"{self.origin}/push/{name}")
        self.subscriptions[name] = sub
        return sub

    def _check_vapid(self, header: str) -> str | None:
        scheme, _, params = header.partition(" ")
        if scheme.lower() != "vapid":
            return "Authorization is not the vapid scheme"
        fields = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        if "t" not in fields or "k" not in fields:
            return "vapid Authorization lacks t or k"
        if unb64url(fields["k"]) != self.application_server_key:
            return "VAPID key is not the one the subscription was made with"
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(fields["k"]))
        try:
            claims = jwt.decode(
                fields["t"], key, algorithms=["ES256"], audience=self.origin, options={"require": ["exp", "aud", "sub"]}
            )
        except jwt.PyJWTError as e:
            return f"VAPID JWT refused: {e}"
        if claims["exp"] > time.time() + 86400:
            return "VAPID JWT expires more than 24 hours ahead"
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            return "VAPID sub is not a mailto: or https: contact"
        return None

    async def push(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        sub = self.subscriptions.get(name)
        if sub is None:
            return web.Response(status=404, text=self.m.refuse(f"no subscription {name}"))
        why = self._check_vapid(request.headers.get("Authorization", ""))
        if why:
            return web.Response(status=403, text=self.m.refuse(why))
        if request.headers.get("Content-Encoding") != "aes128gcm":
            return web.Response(status=415, text=self.m.refuse("Content-Encoding is not aes128gcm"))
        ttl = request.headers.get("TTL", "")
        if not ttl.isdigit():
            return web.Response(status=400, text=self.m.refuse("TTL missing or not a number"))
        topic = request.headers.get("Topic")
        if topic is not None and (len(topic) > 32 or not all(c.isalnum() or c in "-_" for c in topic)):
            return web.Response(status=400, text=self.m.refuse("Topic is not 1-32 base64url characters"))
        body = await request.read()
        if len(body) > 4096:
            return web.Response(status=413, text=self.m.refuse("payload over 4096 bytes"))
        try:
            plain = sub.decrypt(body)
        except Exception as e:  # any failure to decrypt is the sender's fault, as for a browser
            return web.Response(status=400, text=self.m.refuse(f"payload does not decrypt: {e!r}"))
        mode = self.m.mode(name)
        if mode == "gone":
            return web.Response(status=410, text="subscription expired")
        if mode == "busy":
            return web.Response(status=429, headers={"Retry-After": BUSY_RETRY_AFTER})
        if mode == "down":
            return web.Response(status=503, headers={"Retry-After": DOWN_RETRY_AFTER})
        if mode == "error":
            return web.Response(status=500)
        if mode == "slow":
            await self.m.stall()
        self.m.accepted.append(
            {
                "name": name,
                "payload": msgspec.json.decode(plain),
                "topic": topic,
                "ttl": int(ttl),
                "urgency": request.headers.get("Urgency"),
                "authorization": request.headers["Authorization"],
            }
        )
        return web.Response(status=201, headers={"Location": f"{self.origin}/message/{len(self.m.accepted)}"})
