"""What the writer's memory and the job modules of the SQLite store both name: the column
order of a ``messages`` row as appended, and the current members of a conversation.

Below :mod:`yim.storage.sqlite.memory` and the job modules alike: the memory writes the
message rows an appending job held back, and loads the rosters it fans out to, so these
cannot live with the jobs that import the memory.
"""

from __future__ import annotations

import sqlite3

#: A message row as appended: the order of the tuples appending jobs build, whether they
#: are written at once or held in the writer's memory until its flush.
MESSAGE_COLUMNS = (
    "conv_id, seq, msg_id, sender_id, sender_device, kind, body, client_msg_id,"
    " sender_inbox_seq, created_at, uncounted, mentions, mention_all"
)


def member_ids(conn: sqlite3.Connection, conv_id: int) -> list[int]:
    """The current members of a conversation (those who have not left)."""
    return [
        r[0]
        for r in conn.execute("SELECT user_id FROM user_conversations WHERE conv_id=? AND left_seq IS NULL", (conv_id,))
    ]
