"""The server-role rules both stores apply (yim.storage.rules.admin), table by table, without a node."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from yim.protocol.errors import YimError
from yim.storage.admin import AccountRec
from yim.storage.rules import admin as rules


def account(user_id: int = 1, *, is_admin: bool = False, disabled_at: int | None = None) -> AccountRec:
    return AccountRec(user_id, f"u{user_id}", f"U{user_id}", 0, is_admin, disabled_at)


def code_of(fn: Callable[[], object]) -> str | None:
    try:
        fn()
    except YimError as exc:
        return exc.code
    return None


@pytest.mark.parametrize(
    ("actor_id", "actor", "want"),
    [
        (None, None, None),  # the operator on the host, through the store
        (1, account(1, is_admin=True), None),
        (1, account(1), "forbidden"),  # a user
        (1, account(1, is_admin=True, disabled_at=5), "forbidden"),  # a disabled admin
        (1, None, "forbidden"),  # an account that is gone
    ],
)
def test_require_admin(actor_id: int | None, actor: AccountRec | None, want: str | None) -> None:
    assert code_of(lambda: rules.require_admin(actor_id, actor)) == want


@pytest.mark.parametrize(
    ("actor_id", "target", "want"),
    [
        (1, account(2), None),
        (None, account(2), None),
        (1, account(1, is_admin=True), "bad_request"),  # not oneself
        (None, account(1, is_admin=True), None),  # the operator may
    ],
)
def test_may_disable(actor_id: int | None, target: AccountRec, want: str | None) -> None:
    assert code_of(lambda: rules.may_disable(actor_id, target)) == want


@pytest.mark.parametrize(("disabled_at", "want"), [(None, None), (0, "account_disabled"), (9, "account_disabled")])
def test_may_sign_in(disabled_at: int | None, want: str | None) -> None:
    assert code_of(lambda: rules.may_sign_in(disabled_at)) == want


def test_target_account() -> None:
    assert code_of(lambda: rules.target_account(3, None)) == "not_found"
    assert rules.target_account(3, account(3)).id == 3


@pytest.mark.parametrize(
    ("role", "want"), [("member", None), ("admin", None), (None, "not_found"), ("owner", "bad_request")]
)
def test_may_transfer(role: str | None, want: str | None) -> None:
    assert code_of(lambda: rules.may_transfer(7, 2, role)) == want


def test_shop_owner() -> None:
    assert code_of(lambda: rules.shop_owner(5, None)) == "not_found"
    assert rules.shop_owner(5, 9) == 9
