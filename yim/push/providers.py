"""One entry point over the configured providers: a target's type picks its provider."""

from __future__ import annotations

from yim.push.apns import ApnsProvider
from yim.push.fcm import FcmProvider
from yim.push.gateway import GatewayProvider
from yim.push.types import (
    ApnsTarget,
    Failed,
    FcmTarget,
    GatewayTarget,
    Notification,
    Provider,
    PushOutcome,
    PushSettings,
    PushTarget,
    WebPushTarget,
)
from yim.push.vapid import VapidKey, load_or_create
from yim.push.webpush import WebPushProvider


class PushProviders:
    """The providers the settings configure (Web Push whenever `vapid_dir` is set); the rest answer Failed."""

    def __init__(self, settings: PushSettings) -> None:
        self.vapid: VapidKey | None = load_or_create(settings.vapid_dir) if settings.vapid_dir else None
        # typed by the interface, so each class is checked against it
        self.webpush: Provider[WebPushTarget] | None = WebPushProvider(settings, self.vapid) if self.vapid else None
        self.apns: Provider[ApnsTarget] | None = ApnsProvider(settings) if settings.apns_key_file else None
        self.fcm: Provider[FcmTarget] | None = FcmProvider(settings) if settings.fcm_credentials_file else None
        self.gateway: Provider[GatewayTarget] | None = GatewayProvider(settings) if settings.gateway_url else None

    async def send(self, target: PushTarget, notification: Notification) -> PushOutcome:
        match target:
            case WebPushTarget() if self.webpush:
                return await self.webpush.send(target, notification)
            case ApnsTarget() if self.apns:
                return await self.apns.send(target, notification)
            case FcmTarget() if self.fcm:
                return await self.fcm.send(target, notification)
            case GatewayTarget() if self.gateway:
                return await self.gateway.send(target, notification)
        return Failed(f"no {type(target).__name__.removesuffix('Target')} provider is configured")

    async def close(self) -> None:
        for p in (self.webpush, self.apns, self.fcm, self.gateway):
            if p is not None:
                await p.close()
