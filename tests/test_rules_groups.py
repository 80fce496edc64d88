"""The group rules both stores apply (yim.storage.rules.groups), table by table, without a node."""

from __future__ import annotations

import msgspec
import pytest

from yim.protocol.errors import YimError
from yim.storage.records import Entry, GroupRec
from yim.storage.rules import groups as rules


def group(**over: object) -> GroupRec:
    base = GroupRec(
        conv_id=7,
        name="g",
        avatar="",
        announcement="",
        owner_id=1,
        join_policy="invite",
        mute_all=False,
        max_members=10,
        member_count=3,
        fanout="write",
        switch_seq=0,
        last_seq=5,
        created_at=0,
        dissolved=False,
    )
    return msgspec.structs.replace(base, **over)


def code_of(fn: object, *args: object, **kwargs: object) -> str | None:
    try:
        fn(*args, **kwargs)  # type: ignore[operator]
    except YimError as exc:
        return exc.code
    return None


# actor role, target role -> may act (remove / mute)
OUTRANKS = [
    ("owner", "admin", True),
    ("owner", "member", True),
    ("owner", "owner", False),
    ("admin", "member", True),
    ("admin", "admin", False),
    ("admin", "owner", False),
    ("member", "member", False),
    ("member", "admin", False),
    ("member", "owner", False),
]


@pytest.mark.parametrize(("actor", "target", "may"), OUTRANKS)
def test_outranks(actor: str, target: str, may: bool) -> None:
    assert rules.outranks(actor, target) is may


# actor id, actor role, user id, target role -> event or error code
REMOVE = [
    (2, "member", 2, "member", "left"),
    (2, "admin", 2, "admin", "left"),
    (1, "owner", 1, "owner", "forbidden"),  # the owner transfers or dissolves first
    (9, None, 2, "member", "not_member"),
    (9, None, 9, None, "not_member"),
    (1, "owner", 4, None, "not_found"),
    (1, "owner", 2, "admin", "removed"),
    (2, "admin", 3, "member", "removed"),
    (2, "admin", 4, "admin", "forbidden"),
    (2, "admin", 1, "owner", "forbidden"),
    (3, "member", 5, "member", "forbidden"),
    (3, "member", 4, None, "not_found"),  # an absent target is named before the rank
]


@pytest.mark.parametrize(("actor_id", "actor_role", "user_id", "target_role", "outcome"), REMOVE)
def test_remove(actor_id: int, actor_role: str | None, user_id: int, target_role: str | None, outcome: str) -> None:
    try:
        got = rules.remove_event(7, actor_id, actor_role, user_id, target_role)
    except YimError as exc:
        got = exc.code
    assert got == outcome


MUTE = [
    ("owner", "member", None),
    ("owner", "admin", None),
    ("admin", "member", None),
    ("admin", "admin", "forbidden"),
    ("admin", "owner", "forbidden"),
    ("member", "member", "forbidden"),
    (None, "member", "not_member"),
    ("owner", None, "not_found"),
]


@pytest.mark.parametrize(("actor_role", "target_role", "code"), MUTE)
def test_mute(actor_role: str | None, target_role: str | None, code: str | None) -> None:
    assert code_of(rules.check_mute, 7, actor_role, 3, target_role) == code


# actor id, actor role, user id, target role -> error code
SET_ROLE = [
    (1, "owner", 2, "member", None),
    (1, "owner", 2, "admin", None),
    (1, "owner", 1, "owner", "bad_request"),
    (1, "owner", 9, None, "not_found"),
    (2, "admin", 3, "member", "forbidden"),
    (3, "member", 3, "member", "forbidden"),
    (9, None, 3, "member", "not_member"),
]


@pytest.mark.parametrize(("actor_id", "actor_role", "user_id", "target_role", "code"), SET_ROLE)
def test_set_role(
    actor_id: int, actor_role: str | None, user_id: int, target_role: str | None, code: str | None
) -> None:
    assert code_of(rules.check_set_role, 7, actor_id, actor_role, user_id, target_role) == code


# join policy, via, actor role, user ids (actor is 5) -> error code
ADD = [
    ("open", "join", None, [5], None),
    ("open", "join", None, [5, 6], "bad_request"),
    ("open", "join", None, [6], "bad_request"),
    ("invite", "join", None, [5], "forbidden"),
    ("admins_invite", "join", None, [5], "forbidden"),
    ("invite", "invite", "member", [6, 8], None),
    ("open", "invite", "member", [6], None),
    ("invite", "invite", None, [6], "not_member"),
    ("admins_invite", "invite", "member", [6], "forbidden"),
    ("admins_invite", "invite", "admin", [6], None),
    ("admins_invite", "invite", "owner", [6], None),
]


@pytest.mark.parametrize(("policy", "via", "actor_role", "user_ids", "code"), ADD)
def test_add(policy: str, via: str, actor_role: str | None, user_ids: list[int], code: str | None) -> None:
    assert code_of(rules.check_add, group(join_policy=policy), 5, actor_role, user_ids, via) == code


# actor role, changes, member count -> error code
UPDATE = [
    ("owner", {"name": "n"}, 3, None),
    ("admin", {"announcement": "a", "mute_all": True}, 3, None),
    ("member", {"name": "n"}, 3, "forbidden"),
    (None, {"name": "n"}, 3, "not_member"),
    ("owner", {}, 3, "bad_request"),
    ("owner", {"owner_id": 2}, 3, "bad_request"),
    ("owner", {"name": "n", "fanout": "read"}, 3, "bad_request"),
    ("owner", {"max_members": 3}, 3, None),
    ("owner", {"max_members": 2}, 3, "bad_request"),
    ("member", {}, 3, "forbidden"),  # the role is checked before the fields
]


@pytest.mark.parametrize(("actor_role", "changes", "count", "code"), UPDATE)
def test_update(actor_role: str | None, changes: dict[str, object], count: int, code: str | None) -> None:
    assert code_of(rules.check_update, group(member_count=count), actor_role, changes) == code


def test_update_returns_sorted_columns() -> None:
    assert rules.check_update(group(), "owner", {"name": "x", "avatar": "y"}) == ["avatar", "name"]


@pytest.mark.parametrize(
    ("actor_role", "code"), [("owner", None), ("admin", "forbidden"), ("member", "forbidden"), (None, "not_member")]
)
def test_dissolve(actor_role: str | None, code: str | None) -> None:
    assert code_of(rules.check_dissolve, 7, actor_role) == code


# group, allow dissolved -> error code
LIVE = [
    (None, False, "not_found"),
    (None, True, "not_found"),
    (group(), False, None),
    (group(dissolved=True), False, "group_dissolved"),
    (group(dissolved=True), True, None),
]


@pytest.mark.parametrize(("g", "allow", "code"), LIVE)
def test_live_group(g: GroupRec | None, allow: bool, code: str | None) -> None:
    assert code_of(rules.live_group, g, 7, allow_dissolved=allow) == code


@pytest.mark.parametrize(
    ("policy", "ever_member", "code"),
    [
        ("open", False, None),
        ("invite", False, "not_member"),
        ("invite", True, None),
        ("admins_invite", False, "not_member"),
    ],
)
def test_view(policy: str, ever_member: bool, code: str | None) -> None:
    assert code_of(rules.check_view, group(join_policy=policy), ever_member) == code


# count, max -> error code
@pytest.mark.parametrize(("count", "limit", "code"), [(10, 10, None), (11, 10, "group_full"), (0, 0, None)])
def test_room(count: int, limit: int, code: str | None) -> None:
    assert code_of(rules.check_room, count, limit) == code


def test_users_exist_names_the_smallest_missing() -> None:
    with pytest.raises(YimError) as info:
        rules.check_users_exist([5, 3, 4, 9], {5, 9})
    assert info.value.code == "not_found" and "no user 3" in str(info.value)
    rules.check_users_exist([5, 5], {5})


# fanout, count, threshold -> new group's fanout, switches
FANOUT = [
    ("write", 5, 5, "write", False),
    ("write", 6, 5, "read", True),
    ("read", 6, 5, "read", False),  # already read: no second switch
    ("read", 2, 5, "write", False),  # a shrunk read group stays read (the switch is one-way)
]


@pytest.mark.parametrize(("fanout", "count", "threshold", "new_fanout", "switches"), FANOUT)
def test_fanout(fanout: str, count: int, threshold: int, new_fanout: str, switches: bool) -> None:
    assert rules.fanout_for(count, threshold) == new_fanout
    assert rules.switches_to_read(group(fanout=fanout), count, threshold) is switches


def test_system_entry() -> None:
    entry = rules.system_entry(3, 99, 1234, "role", users=["4"], role="admin")
    assert msgspec.json.decode(entry.body) == {"event": "role", "actor": "3", "users": ["4"], "role": "admin"}
    assert msgspec.structs.replace(entry, body=b"") == Entry(
        msg_id=99,
        sender_id=3,
        sender_device="",
        kind="system",
        body=b"",
        client_msg_id="system:99",
        created_at=1234,
        uncounted=True,
    )


def test_messages_are_those_clients_saw() -> None:
    with pytest.raises(YimError, match="you may not remove this member"):
        rules.remove_event(7, 2, "admin", 4, "admin")
    with pytest.raises(YimError, match="only the owner and admins may invite to this group"):
        rules.check_add(group(join_policy="admins_invite"), 5, "member", [6], "invite")
    assert code_of(rules.receipt_sender, None, 7, 3) == "not_found"
    assert rules.receipt_sender(4, 7, 3) == 4


def test_new_group_row() -> None:
    from yim.storage.records import CreateGroupCmd

    cmd = CreateGroupCmd(
        conv_id=7,
        msg_id=8,
        owner_id=1,
        member_ids=[2],
        name="n",
        announcement="a",
        avatar="v",
        join_policy="open",
        max_members=50,
        threshold=2,
        created_at=100,
    )
    cols = [c.strip() for c in rules.NEW_GROUP_COLS.split(",")]
    assert dict(zip(cols, rules.new_group_row(cmd, 2, cmd.threshold), strict=True)) == {
        "id": 7,
        "type": "group",
        "created_at": 100,
        "last_seq": 0,
        "last_msg_id": 7,
        "updated_at": 100,
        "name": "n",
        "avatar": "v",
        "announcement": "a",
        "owner_id": 1,
        "join_policy": "open",
        "max_members": 50,
        "member_count": 2,
        "fanout": "write",
    }
    assert rules.new_group_row(cmd, 3, cmd.threshold)[-1] == "read"
