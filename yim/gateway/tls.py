"""TLS for ``yim serve --tls-cert PATH --tls-key PATH``: https and wss on the node's port."""

from __future__ import annotations

import ssl


def server_ssl_context(cert_path: str, key_path: str) -> ssl.SSLContext:
    """A server context with the library's secure defaults and TLS 1.2 as the floor."""
    if not cert_path or not key_path:
        raise SystemExit("TLS needs both --tls-cert and --tls-key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    return ctx
