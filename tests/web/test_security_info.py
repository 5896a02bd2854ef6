"""The Security info page: methods, recovery codes, recent sign-ins, sessions, and the step-up before changes."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pyotp
import pytest

from alacop.core.accounts import User
from tests.conftest import STRONG, Harness, audit_details

SECURITY = "/account/security"


# -- helpers -----------------------------------------------------------------------------------------
def _page(h: Harness) -> Any:
    page = h.client.get(SECURITY)
    assert page.status_code == 200
    assert page.template.name == "account/security.html"
    return page


def _post(h: Harness, path: str, **data: str) -> Any:
    """A form post from the Security info page, with the page's CSRF token; redirects are not followed."""
    token = _page(h).context["csrf_token"]
    return h.client.post(path, data={"csrf_token": token, **data}, follow_redirects=False)


def _location(response: Any) -> str:
    assert response.status_code == 303, response.status_code
    return str(response.headers["location"])


def _methods(h: Harness, user: User) -> list[Any]:
    async def go() -> list[Any]:
        async with h.portal.deps.store.read() as db:
            return list(await db.methods.for_user(user.id))

    return h.run(go)


def _codes_left(h: Harness, user: User) -> int:
    async def go() -> int:
        async with h.portal.deps.store.read() as db:
            return len(await db.recovery_codes.unused_for_user(user.id))

    return h.run(go)


def _start_totp(h: Harness) -> tuple[Any, str]:
    started = _post(h, "/account/security/add", kind="totp")
    assert _location(started).startswith("/account/security/add?flow=")
    page = h.client.get(_location(started))
    assert page.status_code == 200
    return page, page.context["totp_secret"].replace(" ", "")


def _confirm_totp(h: Harness, page: Any, code: str, name: str = "Work phone") -> Any:
    token = _page(h).context["csrf_token"]
    flow = page.context["flow"]
    return h.client.post(
        f"/account/security/add?flow={flow.id}",
        data={"csrf_token": token, "code": code, "name": name},
        follow_redirects=False,
    )


def _add_totp(h: Harness, name: str = "Work phone") -> str:
    page, secret = _start_totp(h)
    done = _confirm_totp(h, page, pyotp.TOTP(secret).at(h.clock.now()), name)
    assert _location(done) == "/account/security?done=method_added"
    return secret


def _reauth(h: Harness, password: str, nxt: str = SECURITY) -> Any:
    token = h.client.get(f"/account/reauth?next={nxt}").context["csrf_token"]
    return h.client.post(
        "/account/reauth", data={"csrf_token": token, "password": password, "next": nxt}, follow_redirects=False
    )


def _sign_in_with_recovery_code(h: Harness, code: str, username: str = "cs0101") -> Any:
    page = h.password(h.identifier(username), STRONG)
    assert page.template.name == "login/second_factor.html"
    flow = h.flow_of(page)
    chosen = h.client.post(
        f"/login/method?flow={flow.id}", data={"csrf_token": flow.csrf_token, "kind": "recovery_code"}
    )
    flow = h.flow_of(chosen)
    return h.client.post(
        f"/login/second-factor?flow={flow.id}", data={"csrf_token": flow.csrf_token, "code": code, "credential": ""}
    )


# -- the page ----------------------------------------------------------------------------------------
def test_page_needs_a_signed_in_session(harness: Harness) -> None:
    harness.create_user()
    assert harness.client.get(SECURITY, follow_redirects=False).headers["location"] == "/login"


def test_page_needs_aal2_not_just_a_password(harness: Harness) -> None:
    harness.create_user()
    # Password accepted, second factor not yet given: no session to show the page to.
    halfway = harness.password(harness.identifier("cs0101"), STRONG)
    assert halfway.template.name == "login/second_factor.html"
    assert harness.client.get(SECURITY).url.path == "/login"


def test_page_lists_methods_codes_recent_sign_ins_and_sessions(harness: Harness) -> None:
    harness.create_user()
    failed = harness.password(harness.identifier("cs0101"), "not the password")
    assert failed.context["message_ids"] == ["credentials_invalid"]
    assert harness.sign_in().url.path == "/apps"
    signed_in_at = harness.clock.now()
    page = _page(harness)

    (method,) = page.context["methods"]
    assert (method.kind.label, method.name) == ("Authenticator app", "Test phone")
    row = re.search(r'<tr data-method-id="[^"]+">(.*?)</tr>', page.text, re.S)
    assert row is not None
    assert "Authenticator app" in row.group(1) and 'value="Test phone"' in row.group(1)
    assert signed_in_at.strftime("%Y-%m-%d") in row.group(1)  # added
    assert signed_in_at.strftime("%Y-%m-%d %H:%M UTC") in row.group(1)  # last used: this sign-in

    assert page.context["codes_left"] == 10
    assert "10 of 10 unused" in page.text

    recent = page.context["recent"]
    assert [r["ok"] for r in recent] == [True, False]  # newest first
    assert [r["what"] for r in recent] == ["Signed in", "Failed sign-in"]
    assert all(r["address"] == "127.0.0.1" and r["browser"] == "testclient" for r in recent)
    assert 'class="failed"' in page.text and "Failed sign-in" in page.text

    (session,) = page.context["sessions"]
    assert session.id_hash == page.context["session"].id_hash
    assert "(this browser)" in page.text
    # One session: nothing else to sign out of.
    assert "/account/security/sessions/end-others" not in page.text


def test_page_says_changes_need_the_password_after_ten_minutes(harness: Harness) -> None:
    harness.create_user()
    harness.sign_in()
    assert _page(harness).context["recent_enough"] is True
    harness.clock.advance(timedelta(minutes=11))
    page = _page(harness)
    assert page.context["recent_enough"] is False
    assert "you will be asked for your password first" in page.text


# -- adding an authenticator app ---------------------------------------------------------------------
def test_add_authenticator_app(harness: Harness) -> None:
    user = harness.create_user()
    harness.sign_in()
    page, secret = _start_totp(harness)
    assert page.template.name == "account/add_method.html"
    assert re.search(r'<div class="qr">\s*<svg', page.text)
    assert page.context["totp_secret"] in page.text
    assert len(secret) >= 16 and secret != harness.totp_secret

    code = pyotp.TOTP(secret).at(harness.clock.now())
    wrong = _confirm_totp(harness, page, f"{(int(code) + 1) % 1_000_000:06d}")
    assert wrong.status_code == 400
    assert wrong.context["message_ids"] == ["totp_enrol_code_wrong"]
    assert "That code didn't match" in html.unescape(wrong.text)
    assert len(_methods(harness, user)) == 1
    assert harness.events("MethodEnrolmentFailed")[-1].reason == "code_wrong"

    done = _confirm_totp(harness, page, code, "Work phone")
    assert _location(done) == "/account/security?done=method_added"
    after = harness.client.get(_location(done))
    assert after.context["message_ids"] == ["method_added"]
    methods = after.context["methods"]
    assert sorted(m.name for m in methods) == ["Test phone", "Work phone"]

    (added,) = harness.events("MethodAdded")
    new = next(m for m in methods if m.name == "Work phone")
    assert audit_details(added) == {"method_id": new.id, "kind": "totp", "name": "Work phone"}
    assert added.subject_id == user.id and added.actor_id == user.id
    # The seed is not in the audit trail, in any form.
    assert secret not in added.details and secret.lower() not in json.dumps([r.details for r in harness.audit()])


def test_the_confirming_code_of_a_new_app_cannot_be_replayed_for_the_flow(harness: Harness) -> None:
    user = harness.create_user()
    harness.sign_in()
    page, secret = _start_totp(harness)
    code = pyotp.TOTP(secret).at(harness.clock.now())
    assert _location(_confirm_totp(harness, page, code)) == "/account/security?done=method_added"
    # The flow is spent: a second submit adds nothing.
    again = _confirm_totp(harness, page, code, "Second copy")
    assert _location(again) == SECURITY
    assert len(_methods(harness, user)) == 2


def test_the_add_form_as_rendered_can_be_submitted(harness: Harness) -> None:
    harness.create_user()
    harness.sign_in()
    page, secret = _start_totp(harness)
    hidden = re.search(r'name="csrf_token" value="([^"]*)"', page.text)
    assert hidden is not None
    flow = page.context["flow"]
    done = harness.client.post(
        f"/account/security/add?flow={flow.id}",
        data={"csrf_token": hidden.group(1), "code": pyotp.TOTP(secret).at(harness.clock.now()), "name": "Mine"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/account/security?done=method_added"


def test_add_refuses_an_unknown_kind(harness: Harness) -> None:
    user = harness.create_user()
    harness.sign_in()
    response = _post(harness, "/account/security/add", kind="password")
    assert response.status_code == 400
    assert len(_methods(harness, user)) == 1


def test_another_users_add_flow_is_not_usable(app_factory: Callable[..., Harness]) -> None:
    h = app_factory()
    h.create_user()
    h.sign_in()
    page, secret = _start_totp(h)
    flow = page.context["flow"]
    other = app_factory(clock=h.clock)
    other_user = other.create_user("cs0202")
    other.sign_in("cs0202")
    # Another browser (and another account) cannot open or complete this flow.
    assert other.client.get(f"/account/security/add?flow={flow.id}").url.path == SECURITY
    token = _page(other).context["csrf_token"]
    stolen = other.client.post(
        f"/account/security/add?flow={flow.id}",
        data={"csrf_token": token, "code": pyotp.TOTP(secret).at(h.clock.now()), "name": "Stolen"},
        follow_redirects=False,
    )
    assert _location(stolen) == SECURITY
    assert [m.name for m in _methods(other, other_user)] == ["Test phone"]


# -- renaming ----------------------------------------------------------------------------------------
def test_rename_changes_the_name_and_is_audited(harness: Harness) -> None:
    user = harness.create_user()
    harness.sign_in()
    (method,) = _methods(harness, user)
    done = _post(harness, "/account/security/rename", method_id=method.id, name="  Personal iPhone  ")
    assert _location(done) == "/account/security?done=method_renamed"
    assert [m.name for m in _methods(harness, user)] == ["Personal iPhone"]
    (renamed,) = harness.events("MethodRenamed")
    details = audit_details(renamed)
    assert details["before"] == {"name": "Test phone"}
    assert details["after"] == {"name": "Personal iPhone"}
    assert details["method_id"] == method.id


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("Work\x00 phone\x1b[31m\n", "Work phone[31m"),
        ("x" * 100, "x" * 64),
        ("\x07\x08\t\r\n", "Test phone"),  # nothing printable left: the name stays
        ("é" * 70, "é" * 64),
    ],
)
def test_rename_cleans_control_characters_and_cuts_long_names(harness: Harness, typed: str, stored: str) -> None:
    user = harness.create_user()
    harness.sign_in()
    (method,) = _methods(harness, user)
    _post(harness, "/account/security/rename", method_id=method.id, name=typed)
    assert [m.name for m in _methods(harness, user)] == [stored]
    assert audit_details(harness.events("MethodRenamed")[-1])["after"] == {"name": stored}


def test_rename_of_another_users_method_is_not_found(harness: Harness) -> None:
    victim = harness.create_user("cs0202")
    (theirs,) = _methods(harness, victim)
    harness.create_user()
    harness.sign_in()
    response = _post(harness, "/account/security/rename", method_id=theirs.id, name="Mine now")
    assert _location(response) == "/account/security?refused=method_not_found"
    assert [m.name for m in _methods(harness, victim)] == ["Test phone"]
    assert harness.events("MethodRenamed") == []


# -- removing ----------------------------------------------------------------------------------------
def test_the_only_method_cannot_be_removed(harness: Harness) -> None:
    user = harness.create_user()
    harness.sign_in()
    (method,) = _methods(harness, user)
    response = _post(harness, "/account/security/remove", method_id=method.id)
    assert _location(response) == "/account/security?refused=method_last_required"
    page = harness.client.get(_location(response))
    assert page.context["message_ids"] == ["method_last_required"]
    assert "Add another method first" in page.text
    assert len(_methods(harness, user)) == 1
    assert harness.events("MethodRemoved") == []


def test_with_a_second_method_removal_works_and_is_audited(harness: Harness) -> None:
    user = harness.create_user()
    harness.sign_in()
    _add_totp(harness, "Work phone")
    old = next(m for m in _methods(harness, user) if m.name == "Test phone")
    done = _post(harness, "/account/security/remove", method_id=old.id)
    assert _location(done) == "/account/security?done=method_removed"
    assert [m.name for m in _methods(harness, user)] == ["Work phone"]
    (removed,) = harness.events("MethodRemoved")
    assert audit_details(removed) == {"method_id": old.id, "kind": "totp", "name": "Test phone"}
    # The removed app's codes no longer sign in.
    harness.client.cookies.clear()
    page = harness.finish(harness.password(harness.identifier("cs0101"), STRONG))
    assert page.status_code != 303 and page.url.path != "/apps"
    assert page.context["message_ids"]


def test_removing_another_users_method_is_not_found_and_changes_nothing(harness: Harness) -> None:
    victim = harness.create_user("cs0202")
    (theirs,) = _methods(harness, victim)
    user = harness.create_user()
    harness.sign_in()
    _add_totp(harness)
    response = _post(harness, "/account/security/remove", method_id=theirs.id)
    assert _location(response) == "/account/security?refused=method_not_found"
    assert [m.id for m in _methods(harness, victim)] == [theirs.id]
    assert len(_methods(harness, user)) == 2
    assert harness.events("MethodRemoved") == []


def test_removing_an_unknown_id_is_not_found(harness: Harness) -> None:
    harness.create_user()
    harness.sign_in()
    response = _post(harness, "/account/security/remove", method_id="no-such-method" * 10)
    assert _location(response) == "/account/security?refused=method_not_found"


# -- step-up (CJIS IA-11) ----------------------------------------------------------------------------
def _stale(h: Harness) -> User:
    user = h.create_user()
    h.sign_in()
    h.clock.advance(timedelta(minutes=11))
    return user


def test_after_ten_minutes_every_change_asks_for_the_password(harness: Harness) -> None:
    user = _stale(harness)
    (method,) = _methods(harness, user)
    token = _page(harness).context["csrf_token"]
    posts = [
        ("/account/security/rename", {"method_id": method.id, "name": "Renamed"}),
        ("/account/security/remove", {"method_id": method.id}),
        ("/account/security/add", {"kind": "totp"}),
        ("/account/security/recovery-codes", {}),
    ]
    for path, data in posts:
        response = harness.client.post(path, data={"csrf_token": token, **data}, follow_redirects=False)
        assert _location(response) == "/account/reauth?next=/account/security", path
    password_post = harness.client.post(
        "/account/password",
        data={"csrf_token": token, "current_password": STRONG, "new_password": "n" * 20, "confirm_password": "n" * 20},
        follow_redirects=False,
    )
    assert _location(password_post) == "/account/reauth?next=/account/password"
    assert _location(harness.client.get("/account/password", follow_redirects=False)) == (
        "/account/reauth?next=/account/password"
    )
    # Nothing changed.
    assert [m.name for m in _methods(harness, user)] == ["Test phone"]
    assert _codes_left(harness, user) == 10
    types = harness.audit_types()
    for kind in ("MethodRenamed", "MethodRemoved", "RecoveryCodesGenerated", "PasswordChanged"):
        assert kind not in types


def test_an_add_flow_started_in_time_cannot_be_finished_after_ten_minutes(harness: Harness) -> None:
    user = harness.create_user()
    harness.sign_in()
    page, secret = _start_totp(harness)
    harness.clock.advance(timedelta(minutes=11))
    late = _confirm_totp(harness, page, pyotp.TOTP(secret).at(harness.clock.now()))
    assert _location(late) == "/account/reauth?next=/account/security"
    assert len(_methods(harness, user)) == 1


def test_wrong_password_at_reauth_is_refused_and_audited(harness: Harness) -> None:
    user = _stale(harness)
    page = harness.client.get("/account/reauth?next=/account/security")
    assert page.status_code == 200 and page.template.name == "account/reauth.html"
    wrong = _reauth(harness, "not my password")
    assert wrong.status_code == 400
    assert wrong.context["message_ids"] == ["current_password_wrong"]
    (failed,) = harness.events("ReauthenticationFailed")
    assert failed.reason == "password_wrong" and failed.subject_id == user.id
    assert audit_details(failed) == {"consecutive_failures": 1}
    # Still not allowed to change anything.
    (method,) = _methods(harness, user)
    assert _location(_post(harness, "/account/security/rename", method_id=method.id, name="X")).startswith(
        "/account/reauth"
    )


def test_right_password_at_reauth_allows_changes_again(harness: Harness) -> None:
    user = _stale(harness)
    done = _reauth(harness, STRONG)
    assert _location(done) == "/account/security?done=reauthenticated"
    assert "Reauthenticated" in harness.audit_types()
    assert harness.client.get(_location(done)).context["message_ids"] == ["reauthenticated"]
    (method,) = _methods(harness, user)
    renamed = _post(harness, "/account/security/rename", method_id=method.id, name="After step-up")
    assert _location(renamed) == "/account/security?done=method_renamed"
    assert [m.name for m in _methods(harness, user)] == ["After step-up"]
    # The password page opens too, and the window lasts another ten minutes only.
    assert harness.client.get("/account/password").template.name == "account/password.html"
    harness.clock.advance(timedelta(minutes=11))
    assert _location(_post(harness, "/account/security/rename", method_id=method.id, name="Y")).startswith(
        "/account/reauth"
    )


def test_reauth_returns_to_the_password_page_when_asked(harness: Harness) -> None:
    _stale(harness)
    assert _location(_reauth(harness, STRONG, "/account/password")) == "/account/password"


@pytest.mark.parametrize("nxt", ["https://evil.example", "//evil.example", "/apps", "/account/security/../../x"])
def test_reauth_ignores_a_next_outside_the_allowed_list(harness: Harness, nxt: str) -> None:
    _stale(harness)
    page = harness.client.get("/account/reauth", params={"next": nxt})
    assert page.context["next"] == SECURITY
    assert "evil.example" not in page.text
    token = page.context["csrf_token"]
    done = harness.client.post(
        "/account/reauth", data={"csrf_token": token, "password": STRONG, "next": nxt}, follow_redirects=False
    )
    assert _location(done) == "/account/security?done=reauthenticated"


def test_five_wrong_passwords_at_reauth_lock_the_account_and_sign_out(harness: Harness) -> None:
    _stale(harness)
    for attempt in range(1, 5):
        response = _reauth(harness, "not my password")
        assert response.status_code == 400
        assert audit_details(harness.events("ReauthenticationFailed")[-1]) == {"consecutive_failures": attempt}
    fifth = _reauth(harness, "not my password")
    assert _location(fifth) == "/login"
    assert harness.client.get("/apps").url.path == "/login"
    # The right password no longer helps: the account is locked.
    assert harness.sign_in().context["message_ids"] == ["account_locked"]


def test_a_lock_at_reauth_is_audited_as_account_locked(harness: Harness) -> None:
    _stale(harness)
    for _ in range(5):
        _reauth(harness, "not my password")
    assert harness.client.get("/apps").url.path == "/login"
    assert "AccountLocked" in harness.audit_types()


def test_reauth_needs_a_session(harness: Harness) -> None:
    assert harness.client.get("/account/reauth").url.path == "/login"


# -- a session opened with a recovery code -----------------------------------------------------------
def test_recovery_code_session_can_view_but_not_add_or_remove(harness: Harness) -> None:
    user = harness.create_user()
    signed_in = _sign_in_with_recovery_code(harness, harness.recovery_codes[0])
    assert signed_in.url.path == "/apps"
    page = _page(harness)
    assert page.context["codes_left"] == 9
    (method,) = _methods(harness, user)
    for path, data in [
        ("/account/security/add", {"kind": "totp"}),
        ("/account/security/remove", {"method_id": method.id}),
        ("/account/security/rename", {"method_id": method.id, "name": "Attacker"}),
    ]:
        response = _post(harness, path, **data)
        assert _location(response) == "/account/security?refused=recovery_code_session", path
    refused = harness.client.get("/account/security?refused=recovery_code_session")
    assert refused.context["message_ids"] == ["recovery_code_session"]
    assert [m.name for m in _methods(harness, user)] == ["Test phone"]
    types = harness.audit_types()
    assert "MethodAdded" not in types and "MethodRemoved" not in types and "MethodRenamed" not in types


def test_recovery_code_session_cannot_open_an_add_flow_page(app_factory: Callable[..., Harness]) -> None:
    h = app_factory()
    h.create_user()
    h.sign_in()
    page, _ = _start_totp(h)
    flow = page.context["flow"]
    h.client.post("/logout", data={"csrf_token": _page(h).context["csrf_token"]})
    assert _sign_in_with_recovery_code(h, h.recovery_codes[0]).url.path == "/apps"
    refused = h.client.get(f"/account/security/add?flow={flow.id}", follow_redirects=False)
    assert _location(refused) == "/account/security?refused=recovery_code_session"


# -- recovery codes ----------------------------------------------------------------------------------
def test_regenerating_recovery_codes(harness: Harness) -> None:
    user = harness.create_user()
    old = list(harness.recovery_codes)
    harness.sign_in()
    response = _post(harness, "/account/security/recovery-codes")
    assert response.status_code == 200
    assert response.template.name == "account/recovery_codes.html"
    assert "no-store" in response.headers["cache-control"]
    codes = response.context["codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    assert not set(codes) & set(old)
    assert all(code in response.text for code in codes)
    # Shown once: the page after does not show them again.
    after = _page(harness)
    assert after.context["codes_left"] == 10
    assert "codes" not in after.context
    assert not any(code in after.text for code in codes)

    (generated,) = harness.events("RecoveryCodesGenerated")
    assert generated.reason == "regenerated"
    assert audit_details(generated) == {"codes": 10, "voided": 10}
    assert not any(code in generated.details for code in codes)

    harness.client.cookies.clear()
    refused = _sign_in_with_recovery_code(harness, old[1])
    assert refused.url.path != "/apps"
    assert refused.template.name == "login/second_factor.html"
    assert harness.events("SecondFactorFailed")[-1].reason == "recovery_code_wrong"
    harness.client.cookies.clear()
    assert _sign_in_with_recovery_code(harness, codes[3]).url.path == "/apps"
    assert _codes_left(harness, user) == 9


# -- signing out everywhere else ---------------------------------------------------------------------
def test_sign_out_everywhere_else(app_factory: Callable[..., Harness]) -> None:
    h = app_factory()
    h.create_user()
    other = app_factory(clock=h.clock)
    other.totp_secret = h.totp_secret
    assert other.sign_in().url.path == "/apps"
    assert h.sign_in().url.path == "/apps"
    page = _page(h)
    assert len(page.context["sessions"]) == 2
    assert "Sign out everywhere else" in page.text
    done = _post(h, "/account/security/sessions/end-others")
    assert _location(done) == "/account/security?done=sessions_ended"
    assert other.client.get("/apps").url.path == "/login"
    assert h.client.get("/apps").url.path == "/apps"
    assert len(_page(h).context["sessions"]) == 1
    (ended,) = h.events("OtherSessionsEnded")
    assert audit_details(ended) == {"ended": 1}


# -- CSRF --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("token", ["", "forged-token", "0" * 64])
@pytest.mark.parametrize(
    "path",
    [
        "/account/security/rename",
        "/account/security/remove",
        "/account/security/add",
        "/account/security/recovery-codes",
        "/account/security/sessions/end-others",
        "/account/reauth",
        "add-confirm",
    ],
)
def test_forged_csrf_token_is_refused_and_changes_nothing(
    app_factory: Callable[..., Harness], path: str, token: str
) -> None:
    h = app_factory()
    user = h.create_user()
    other = app_factory(clock=h.clock)
    other.totp_secret = h.totp_secret
    other.sign_in()
    h.sign_in()
    _add_totp(h, "Work phone")
    method = next(m for m in _methods(h, user) if m.name == "Test phone")
    data = {"method_id": method.id, "name": "Forged", "kind": "totp", "password": STRONG, "next": SECURITY}
    if path == "add-confirm":
        page, secret = _start_totp(h)
        path = f"/account/security/add?flow={page.context['flow'].id}"
        data["code"] = pyotp.TOTP(secret).at(h.clock.now())
    before = len(h.audit())
    response = h.client.post(path, data={**data, "csrf_token": token}, follow_redirects=False)
    assert response.status_code == 403
    assert response.context["code"] == "csrf_failed"
    assert [r.type for r in h.audit()[before:]] == ["RequestRefused"]
    assert sorted(m.name for m in _methods(h, user)) == ["Test phone", "Work phone"]
    assert _codes_left(h, user) == 10
    assert other.client.get("/apps").url.path == "/apps"
    assert h.client.get("/apps").url.path == "/apps"


def test_a_recovery_code_session_cannot_mint_new_codes(harness: Harness) -> None:
    harness.create_user()
    page = harness.password(harness.identifier("cs0101"), STRONG)
    flow = harness.flow_of(page)
    harness.client.post(f"/login/method?flow={flow.id}", data={"csrf_token": flow.csrf_token, "kind": "recovery_code"})
    done = harness.client.post(
        f"/login/second-factor?flow={flow.id}",
        data={"csrf_token": flow.csrf_token, "code": harness.recovery_codes[0], "credential": ""},
    )
    assert done.url.path == "/apps"
    token = harness.client.get("/account/security").context["csrf_token"]
    refused = harness.client.post("/account/security/recovery-codes", data={"csrf_token": token})
    assert str(refused.url).endswith("/account/security?refused=recovery_code_session")
    assert "RecoveryCodesGenerated" not in harness.audit_types()


def test_a_recovery_code_session_cannot_change_the_password(harness: Harness) -> None:
    harness.create_user()
    page = harness.password(harness.identifier("cs0101"), STRONG)
    flow = harness.flow_of(page)
    harness.client.post(f"/login/method?flow={flow.id}", data={"csrf_token": flow.csrf_token, "kind": "recovery_code"})
    harness.client.post(
        f"/login/second-factor?flow={flow.id}",
        data={"csrf_token": flow.csrf_token, "code": harness.recovery_codes[0], "credential": ""},
    )
    refused = harness.client.get("/account/password")
    assert str(refused.url).endswith("/account/security?refused=recovery_code_session")
    token = refused.context["csrf_token"]
    harness.client.post(
        "/account/password",
        data={
            "csrf_token": token,
            "current_password": STRONG,
            "new_password": "another long passphrase 5",
            "confirm_password": "another long passphrase 5",
        },
    )
    assert "PasswordChanged" not in harness.audit_types()
