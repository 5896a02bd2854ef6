"""The signed-in password change page, and what a password change does to other sessions."""

from __future__ import annotations

from tests.conftest import STRONG, Harness

NEW = "a brand new passphrase 42"


def _second_browser(app_factory, h: Harness) -> Harness:  # type: ignore[no-untyped-def]
    """Another browser on the same portal: same clock, and the same phone for the second factor."""
    other: Harness = app_factory(clock=h.clock)
    other.totp_secret = h.totp_secret
    return other


def _form(h: Harness, current: str, new: str = NEW, confirm: str | None = None) -> dict[str, str]:
    page = h.client.get("/account/password")
    return {
        "csrf_token": page.context["csrf_token"],
        "current_password": current,
        "new_password": new,
        "confirm_password": new if confirm is None else confirm,
    }


def test_page_renders_for_a_signed_in_user(harness: Harness) -> None:
    harness.create_user()
    harness.sign_in()
    page = harness.client.get("/account/password")
    assert page.status_code == 200
    assert page.template.name == "account/password.html"
    assert "at least 8 characters" in page.text


def test_page_needs_a_session(harness: Harness) -> None:
    assert harness.client.get("/account/password").url.path == "/login"


def test_change_keeps_this_session_and_ends_the_others(app_factory) -> None:  # type: ignore[no-untyped-def]
    h: Harness = app_factory()
    h.create_user()
    other_browser = _second_browser(app_factory, h)
    other_browser.sign_in()
    h.sign_in()
    done = h.client.post("/account/password", data=_form(h, STRONG))
    assert done.status_code == 200
    assert done.context["message_ids"] == ["password_changed"]
    assert h.client.get("/apps").url.path == "/apps"
    assert other_browser.client.get("/apps").url.path == "/login"
    changed = [r for r in h.audit() if r.type == "PasswordChanged"][-1]
    assert changed.reason == "self_service"
    assert '"other_sessions_ended":1' in changed.details
    h.client.cookies.clear()
    assert h.sign_in("cs0101", NEW).url.path == "/apps"


def test_refusals_tell_the_reason(harness: Harness) -> None:
    harness.create_user()
    harness.sign_in()
    for form, code in [
        (_form(harness, STRONG, "password1"), "password_banned"),
        (_form(harness, STRONG, NEW, "different passphrase"), "password_mismatch"),
        (_form(harness, STRONG, STRONG), "password_reused"),
        (_form(harness, "wrong current"), "current_password_wrong"),
    ]:
        page = harness.client.post("/account/password", data=form)
        assert page.status_code == 400
        assert page.context["message_ids"] == [code]


def test_wrong_current_password_counts_toward_lockout_and_the_lock_signs_out(harness: Harness) -> None:
    harness.create_user()
    harness.sign_in()
    for _ in range(4):
        page = harness.client.post("/account/password", data=_form(harness, "not my password"))
        assert page.context["message_ids"] == ["current_password_wrong"]
    fifth = harness.client.post("/account/password", data=_form(harness, "not my password"))
    assert fifth.url.path == "/login"
    assert harness.client.get("/apps").url.path == "/login"
    assert harness.sign_in().context["message_ids"] == ["account_locked"]
    assert "AccountLocked" in harness.audit_types()


def test_forced_change_at_sign_in_ends_older_sessions(app_factory) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    h: Harness = app_factory()
    user = h.create_user()
    elsewhere = _second_browser(app_factory, h)
    elsewhere.sign_in()

    async def flag() -> None:
        async with h.portal.deps.store.transaction() as tx:
            await tx.users.update(replace(user, must_change_password=True))

    h.run(flag)
    page = h.sign_in()
    flow = page.context["flow"]
    done = h.finish(
        h.client.post(
            f"/login/new-password?flow={flow.id}",
            data={
                "csrf_token": flow.csrf_token,
                "current_password": STRONG,
                "new_password": NEW,
                "confirm_password": NEW,
            },
        )
    )
    assert done.url.path == "/apps"
    assert elsewhere.client.get("/apps").url.path == "/login"


def test_session_reference_reaches_the_audit_trail(harness: Harness) -> None:
    harness.create_user()
    harness.sign_in()
    started = [r for r in harness.audit() if r.type == "SessionStarted"][-1]
    assert '"session_ref":"' in started.details
    assert "[redacted]" not in started.details
