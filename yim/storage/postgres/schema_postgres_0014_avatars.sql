-- Migration (PostgreSQL): user avatars (docs/protocol.md "Profile").
-- users.avatar_media_id: the media (an image the user uploaded) shown as the user's avatar;
-- NULL: none. Anyone who can see the user may read it, so the media check asks "is this some
-- user's avatar?" — the partial index answers that without a scan.
ALTER TABLE users ADD COLUMN avatar_media_id bigint;
CREATE INDEX users_avatar ON users (avatar_media_id) WHERE avatar_media_id IS NOT NULL;
