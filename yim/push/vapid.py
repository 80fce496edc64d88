"""The server's VAPID key pair (RFC 8292): made once in the data folder, then loaded.

Browsers subscribe with the public key (`applicationServerKey`), and push services refuse a push
signed with any other key, so the pair must outlive restarts: losing it orphans every subscription.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from yim.push.types import PushConfigError

KEY_FILE = "vapid_private.pem"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class VapidKey:
    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise PushConfigError("the VAPID key must be a P-256 key")
        self.private_key = private_key
        self.signer = Vapid02(private_key=private_key)
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        #: the uncompressed P-256 point, base64url: what clients pass as applicationServerKey
        self.public_key: str = b64url(raw)

    def authorization(self, audience: str, subject: str, expires: int) -> str:
        """The `Authorization: vapid t=…, k=…` value for one push service origin."""
        headers: dict[str, str] = self.signer.sign({"aud": audience, "sub": subject, "exp": expires})
        return headers["Authorization"]


def load_or_create(folder: str | os.PathLike[str]) -> VapidKey:
    """The key in `folder`, generated there (mode 0600) the first time."""
    path = Path(folder) / KEY_FILE
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # written aside, then linked in place: link() fails if the name exists, so two nodes starting
        # on one folder cannot both win, and neither ever reads a half-written file
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pem = path.read_bytes()
        finally:
            tmp.unlink()
    try:
        loaded = serialization.load_pem_private_key(pem, password=None)
    except ValueError as e:
        raise PushConfigError(f"{path}: not a PEM private key ({e})") from e
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise PushConfigError(f"{path}: the VAPID key must be an EC P-256 key")
    return VapidKey(loaded)
