"""Accounts, logins and device sessions.

A token is a JWT (HS256) naming a *session*: ``sub`` = user id, ``sid`` = session id,
``did`` = device id. The signature proves who issued it; the session row says whether it
still holds — logging out, revoking a device, or logging the same device in again revokes
the session, and every live connection on it is closed (4003).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import secrets
import time
from typing import TYPE_CHECKING

import argon2
import jwt
import msgspec

from yim.protocol.close import CLOSE_REVOKED
from yim.protocol.errors import YimError
from yim.protocol.frames import DeviceOut, LoginBody, LoginOut, RegisterBody, UserOut
from yim.storage.records import SessionRec, UserRec

if TYPE_CHECKING:
    from yim.services.context import Context

_SESSION_CACHE_MAX = 100_000  # entries of ~200 bytes: ~20 MB worst case


class _Claims(msgspec.Struct, forbid_unknown_fields=True):
    """Exactly the claims ``login`` signs; a token with any other shape takes PyJWT's path."""

    sub: str
    sid: str
    did: str
    iat: int
    exp: int


_claims_decoder = msgspec.json.Decoder(_Claims)


def make_hasher(profile: str) -> argon2.PasswordHasher:
    if profile == "cheapest":  # tests only: ~0.1 ms instead of ~170 ms
        return argon2.PasswordHasher.from_parameters(argon2.profiles.CHEAPEST)
    return argon2.PasswordHasher()  # argon2id, RFC 9106 low-memory profile


def user_out(u: UserRec) -> UserOut:
    return UserOut(
        user_id=str(u.id),
        username=u.username,
        display_name=u.display_name,
        created_at=u.created_at,
        avatar=str(u.avatar_media_id) if u.avatar_media_id is not None else "",
    )


def now_ms() -> int:
    return int(time.time() * 1000)


class Accounts:
    def __init__(self, node: Context, secret: bytes) -> None:
        self._node = node
        self._secret = secret
        self._hasher = make_hasher(node.settings.password_hashing)
        # A well-formed hash to verify against when the user does not exist, so that a
        # login for an unknown name costs the same time as a wrong password.
        self._dummy_hash = self._hasher.hash(secrets.token_hex(8))
        self._sessions: dict[str, SessionRec] = {}
        #: Counts forget_cached() calls that dropped something: a connect that sees it
        #: change while it awaited the store checks its session again before registering.
        self.revocations = 0
        # The header segment of every token ``login`` issues, taken from PyJWT itself so
        # that the fast path below recognises exactly what this PyJWT version writes.
        self._header = jwt.encode({}, secret, algorithm="HS256").partition(".")[0].encode() + b"."
        # Keyed once and copied per token. Not hmac.digest(): its one-shot releases the GIL,
        # and on the event loop that hands the GIL to a waiting store thread mid-connect.
        self._mac = hmac.new(secret, digestmod="sha256")

    # -- actions -------------------------------------------------------------------------
    async def register(self, body: RegisterBody) -> UserOut:
        display_name = body.display_name or body.username
        if self._node.words is not None:  # sensitive words (yim/services/words.py)
            display_name = self._node.words.apply(display_name, "the display name")
        pw_hash = await asyncio.to_thread(self._hasher.hash, body.password)
        user = UserRec(
            id=self._node.ids.next_id(),
            username=body.username,
            display_name=display_name,
            password_hash=pw_hash,
            created_at=now_ms(),
        )
        out = user_out(await self._node.store.create_user(user))
        if self._node.hooks is not None:
            await self._node.hooks.emit("account_created", user.id, out)
        return out

    async def login(self, body: LoginBody) -> LoginOut:
        user = await self._node.store.user_by_name(body.username)
        try:
            await asyncio.to_thread(
                self._hasher.verify, user.password_hash if user else self._dummy_hash, body.password
            )
        except argon2.exceptions.VerificationError:
            user = None
        except argon2.exceptions.InvalidHashError:
            user = None
        if user is None:
            raise YimError("unauthorized", "wrong username or password")
        now = now_ms()
        session = SessionRec(
            id=secrets.token_urlsafe(18),
            user_id=user.id,
            device_id=body.device_id,
            platform=body.platform,
            created_at=now,
            expires_at=now + self._node.settings.token_ttl_s * 1000,
        )
        # A login within a pending deletion's grace period cancels it (docs/protocol.md §19.8);
        # before the session: a deletion that ran first leaves the account disabled, and the
        # session's own transaction refuses it.
        cancelled = await self._node.store.erase.cancel_deletion(user.id)
        superseded = await self._node.store.create_session(session, body.device_name)
        self._forget(superseded, user.id, "signed in again on this device")
        self._remember(session)
        self._node.metrics.logins.inc()
        token = jwt.encode(
            {
                "sub": str(user.id),
                "sid": session.id,
                "did": session.device_id,
                "iat": now // 1000,
                "exp": session.expires_at // 1000,
            },
            self._secret,
            algorithm="HS256",
        )
        return LoginOut(
            token=token,
            user_id=str(user.id),
            device_id=session.device_id,
            platform=session.platform,
            expires_at=session.expires_at,
            deletion_cancelled=cancelled,
        )

    def _verified_claims(self, token: str) -> _Claims | None:
        """The claims of a token in exactly the form ``login`` issues, with a valid
        signature, not expired and not issued in the future; None for anything else.

        PyJWT's decode costs ~55 µs (key preparation, stdlib JSON, generic claim checks),
        the largest piece of a connect after aiohttp's own work. This makes the same checks
        for the one shape we sign in ~5 µs: HMAC-SHA256 over the signing input, compared in
        constant time with the canonical base64url of the signature (only the exact encoding
        we wrote matches), and claims that must be exactly ours (no nbf, aud, ...).
        """
        try:
            data = token.encode("ascii")
        except UnicodeEncodeError:
            return None
        if not data.startswith(self._header):
            return None
        signing_input, _, signature = data.rpartition(b".")
        mac = self._mac.copy()
        mac.update(signing_input)
        if not hmac.compare_digest(base64.urlsafe_b64encode(mac.digest()).rstrip(b"="), signature):
            return None
        payload = signing_input[len(self._header) :]
        try:
            claims = _claims_decoder.decode(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
        except (binascii.Error, msgspec.DecodeError):
            return None
        now = time.time()
        if claims.exp <= now or claims.iat > now:
            return None
        return claims

    def _token_ids(self, token: str) -> tuple[str, int | None]:
        """The session a token names and the user of its ``sub`` (None if not a number), or
        YimError('unauthorized')."""
        fast = self._verified_claims(token)
        if fast is not None:
            sid, sub = fast.sid, fast.sub
        else:
            # Anything else (a bad signature, expired, another header or claim set) gets
            # PyJWT's full verification, which decides and names the reason.
            try:
                claims = jwt.decode(token, self._secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})
            except jwt.ExpiredSignatureError:
                raise YimError("unauthorized", "token expired") from None
            except jwt.InvalidTokenError:
                raise YimError("unauthorized", "invalid token") from None
            sid_claim, sub = claims.get("sid"), claims["sub"]
            if not isinstance(sid_claim, str):
                raise YimError("unauthorized", "invalid token")
            sid = sid_claim
        return sid, int(sub) if sub.isascii() and sub.isdigit() else None

    async def _load_session(self, sid: str) -> SessionRec:
        """The session row (the truth), cached if live and nothing was revoked meanwhile."""
        epoch = self.revocations
        session = await self._node.store.get_session(sid)
        if session is None:
            raise YimError("unauthorized", "unknown session")
        # A revocation that landed while the row was read may be this session's: its
        # forget_cached() has run already and would not evict a row cached after it.
        if session.revoked_at is None and self.revocations == epoch:
            self._remember(session)
        return session

    @staticmethod
    def _live(session: SessionRec) -> SessionRec:
        if session.revoked_at is not None:
            raise YimError("unauthorized", "session revoked")
        if session.expires_at <= now_ms():
            raise YimError("unauthorized", "token expired")
        return session

    async def authenticate(self, token: str) -> SessionRec:
        """Token -> live session, or YimError('unauthorized')."""
        sid, _ = self._token_ids(token)
        session = self._sessions.get(sid)
        return self._live(session if session is not None else await self._load_session(sid))

    async def authenticate_with_head(self, token: str) -> tuple[SessionRec, int]:
        """Token -> (live session, its user's inbox head), or YimError('unauthorized').

        A session that is not cached (a node that just started, one made on another node)
        is read at the same time as the head of the user the token's signed ``sub`` names:
        one store round trip of waiting instead of two.
        """
        sid, user_id = self._token_ids(token)
        store = self._node.store
        session = self._sessions.get(sid)
        if session is None and user_id is not None:
            loaded, head = await asyncio.gather(
                self._load_session(sid), store.inbox_head(user_id), return_exceptions=True
            )
            if isinstance(loaded, BaseException):
                raise loaded
            if isinstance(head, BaseException):
                raise head
            session = self._live(loaded)
            if session.user_id == user_id:
                return session, head
            return session, await store.inbox_head(session.user_id)  # the row is the truth
        session = self._live(session if session is not None else await self._load_session(sid))
        return session, await store.inbox_head(session.user_id)

    async def logout(self, session: SessionRec) -> None:
        revoked = await self._node.store.revoke_sessions(session.user_id, session_id=session.id, now=now_ms())
        # a device logged out must not be woken for its user any more
        await self._node.store.push.remove_pusher(session.user_id, session.device_id)
        self._forget(revoked, session.user_id, "logged out")

    async def revoke_device(self, user_id: int, device_id: str) -> int:
        revoked = await self._node.store.revoke_sessions(user_id, device_id=device_id, now=now_ms())
        if not revoked:
            raise YimError("not_found", f"no active session on device {device_id!r}")
        await self._node.store.push.remove_pusher(user_id, device_id)
        self._forget(revoked, user_id, "device revoked")
        return len(revoked)

    async def devices(self, session: SessionRec) -> list[DeviceOut]:
        online = self._node.hub.devices_of(session.user_id)
        return [
            DeviceOut(
                device_id=d.device_id,
                platform=d.platform,
                name=d.name,
                created_at=d.created_at,
                last_seen_at=d.last_seen_at,
                online=d.device_id in online,
                current=d.device_id == session.device_id,
            )
            for d in await self._node.store.list_devices(session.user_id)
        ]

    # -- passwords and ended sessions, for the admin and self-service actions ---------------
    async def hash_password(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def check_password(self, password_hash: str, password: str) -> bool:
        try:
            return await asyncio.to_thread(self._hasher.verify, password_hash, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    def sessions_ended(self, user_id: int, session_ids: list[str], reason: str, code: int) -> None:
        """Sessions the store has revoked: dropped from every node's cache, their live
        connections (on every node) closed with ``code``."""
        self._forget(session_ids, user_id, reason, code)

    # -- session cache -----------------------------------------------------------------
    def _remember(self, session: SessionRec) -> None:
        if len(self._sessions) >= _SESSION_CACHE_MAX:
            self._sessions.pop(next(iter(self._sessions)))
        self._sessions[session.id] = session

    def _forget(self, session_ids: list[str], user_id: int, reason: str, code: int = CLOSE_REVOKED) -> None:
        self.forget_cached(session_ids)
        if session_ids:
            self._node.hub.close_sessions(user_id, set(session_ids), code, f"session revoked: {reason}")
            self._node.bus.sessions_revoked(user_id, session_ids, reason, code)  # other nodes, in cluster mode

    def forget_cached(self, session_ids: list[str] | None = None) -> None:
        """Drop sessions from this node's cache (``None``: all; revocations may have been missed)."""
        if session_ids is None or session_ids:
            self.revocations += 1
        if session_ids is None:
            self._sessions.clear()
        for sid in session_ids or ():
            self._sessions.pop(sid, None)
