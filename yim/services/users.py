"""User profiles: batch lookup, so clients resolve member and sender names in one call;
avatars, and the ``profile`` notice that tells others of a change."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from yim.protocol.errors import YimError
from yim.protocol.frames import UserOut, Users, UsersPage
from yim.protocol.ids import parse_id
from yim.services.accounts import user_out
from yim.storage.media import IMAGE_MIMES, MAX_MEDIA_ID, not_found
from yim.storage.records import SessionRec

if TYPE_CHECKING:
    from yim.services.context import Context, Device

log = logging.getLogger("yim.users")
_encode = msgspec.json.Encoder().encode

#: the most users one ``profile`` notice goes to (friends, followers, direct peers and
#: co-members of write-fan-out groups, in no set order); beyond it clients refresh lazily
PROFILE_NOTICE_MAX = 5000


async def users(node: Context, session: SessionRec, req: Users, origin: Device | None = None) -> UsersPage:
    """Public profiles of up to 500 users; unknown ids are left out."""
    ids = list(dict.fromkeys(parse_id(u, "user") for u in req.user_ids))
    found = await node.store.users_by_ids(ids)
    return UsersPage(users=[user_out(found[i]) for i in ids if i in found])


async def user(node: Context, user_id: int) -> UserOut:
    """One user's public profile, or ``not_found``."""
    found = await node.store.users_by_ids([user_id])
    if user_id not in found:
        raise YimError("not_found", f"no user {user_id}")
    return user_out(found[user_id])


async def user_named(node: Context, username: str) -> UserOut:
    """The profile of the user with this name, or ``not_found``."""
    rec = await node.store.user_by_name(username)
    if rec is None:
        raise YimError("not_found", f"no user named {username!r}")
    return user_out(rec)


async def avatar_media_id(node: Context, user_id: int, ref: str) -> int | None:
    """The media id ``profile_set``'s ``avatar`` names, checked: an image (with its thumbnail,
    which lists show) that this user uploaded. Only the uploader may choose it, because an
    avatar is readable by every signed-in user: nobody can publish media they only received.
    ``""``: no avatar."""
    if not ref:
        return None
    media_id = int(ref)
    if media_id > MAX_MEDIA_ID:
        raise not_found(media_id)
    media = await node.store.media.visible(media_id, user_id)
    if media.uploader_id != user_id:
        raise not_found(media_id)  # the same answer as for an id that does not exist
    if media.blob.mime not in IMAGE_MIMES or media.blob.thumb_sha256 is None:
        raise YimError("media_kind_mismatch", f"an avatar must be an image; media {media_id} is {media.blob.mime}")
    return media_id


async def profile_changed(node: Context, user: UserOut, origin: Device | None) -> None:
    """Tell those whose clients show this user (and the user's other devices) its new
    profile: a ``profile`` notice, on every node. Big groups are left out and the audience
    is capped (PROFILE_NOTICE_MAX): their clients pick the change up with their next
    ``users`` lookup."""
    user_id = int(user.user_id)
    try:
        audience = await node.store.relations.profile_audience(
            user_id, node.settings.group_write_fanout_max, PROFILE_NOTICE_MAX
        )
    except Exception:  # the change is stored: a lost notice only delays what others see
        log.exception("profile audience of %d failed", user_id)
        audience = []
    node.bus.publish_notice([*audience, user_id], "profile", _encode(user), origin=origin)
