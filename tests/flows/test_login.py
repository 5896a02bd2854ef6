"""The username-first sign-in flow, driven end to end through the app."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest

from alacop.core.passwords import PasswordHasher
from alacop.flows.login import TRANSITIONS, LoginFlow, LoginState
from tests.conftest import STRONG, Harness


# -- step 1: the identifier --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "typed",
    ["cs0101", "CS0101", "  cs0101  ", "cs0101@alacop.gov", "CS0101@ALACOP.GOV", "ｃｓ０１０１"],
)
def test_identifier_is_trimmed_nfkc_lowercased_and_completed(harness: Harness, typed: str) -> None:
    page = harness.identifier(typed)
    assert page.template.name == "login/password.html"
    assert harness.flow_of(page).identifier == "cs0101@alacop.gov"
    assert "cs0101@alacop.gov" in page.text


@pytest.mark.parametrize("typed", ["someone@gmail.com", "cs0101@alacop.gov.evil.com", "cs0101@ALEA.gov"])
def test_other_domains_get_the_seed_sentence(harness: Harness, typed: str) -> None:
    page = harness.identifier(typed)
    assert page.template.name == "login/identifier.html"
    assert page.context["message_ids"] == ["identifier_wrong_domain"]
    assert "Enter your AlaCOP email, which is your AlaCOP username followed by “@alacop.gov”" in page.text
    assert harness.audit_types()[-1] == "LoginFailed"


@pytest.mark.parametrize(
    ("typed", "code"),
    [
        ("", "identifier_missing"),
        ("   ", "identifier_missing"),
        ("cs 0101", "identifier_invalid"),
        ("<script>", "identifier_invalid"),
        ("a" * 300, "identifier_invalid"),
    ],
)
def test_malformed_identifiers_are_refused_with_a_message(harness: Harness, typed: str, code: str) -> None:
    page = harness.identifier(typed)
    assert page.status_code == 200
    assert page.context["message_ids"] == [code]
    assert "<script>" not in page.text.split("</title>")[1].split("someone@")[0]


def test_next_records_consent_to_the_warning_with_its_hash(harness: Harness) -> None:
    harness.identifier("cs0101")
    event = harness.audit()[-1]
    assert event.type == "BannerAcknowledged"
    assert harness.portal.settings.branding.warning_sha256 in event.details
    assert event.subject_name == "cs0101@alacop.gov"


def test_change_identifier_returns_to_step_one(harness: Harness) -> None:
    page = harness.identifier("cs0101")
    flow = harness.flow_of(page)
    back = harness.client.post(f"/login/change-identifier?flow={flow.id}", data={"csrf_token": flow.csrf_token})
    assert back.template.name == "login/identifier.html"
    assert harness.flow_of(back).identifier is None
    assert harness.flow_of(back).typed == "cs0101@alacop.gov"


# -- step 2: the password ----------------------------------------------------------------------------
def test_correct_password_signs_in_and_reaches_apps(harness: Harness) -> None:
    harness.create_user()
    response = harness.sign_in()
    assert response.url.path == "/apps"
    assert response.template.name == "apps.html"
    assert response.context["user"].username == "cs0101"
    assert response.context["applications"] == []
    assert "Casey Smith" in response.text
    assert "Sign out" in response.text
    assert harness.audit_types()[-2:] == ["LoginSucceeded", "SessionStarted"]
    success = next(r for r in harness.audit() if r.type == "LoginSucceeded")
    assert harness.portal.settings.branding.warning_sha256 in success.details
    assert success.outcome == "success"


def test_unknown_account_and_wrong_password_look_identical(harness: Harness) -> None:
    harness.create_user()
    wrong = harness.sign_in("cs0101", "not the password at all")
    unknown = harness.sign_in("zz9999", "not the password at all")
    for page in (wrong, unknown):
        assert page.status_code == 200
        assert page.template.name == "login/password.html"
        assert page.context["message_ids"] == ["credentials_invalid"]
    strip = lambda html, who: html.replace(who, "X")
    w = (
        strip(wrong.text, "cs0101@alacop.gov")
        .replace(harness.flow_of(wrong).id, "F")
        .replace(harness.flow_of(wrong).csrf_token, "C")
    )
    u = (
        strip(unknown.text, "zz9999@alacop.gov")
        .replace(harness.flow_of(unknown).id, "F")
        .replace(harness.flow_of(unknown).csrf_token, "C")
    )
    assert w == u


def test_unknown_account_spends_a_real_hash_verification(harness: Harness, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    calls: list[object] = []
    hasher = harness.portal.deps.hasher
    original = hasher.verify

    def spy(stored, password):  # type: ignore[no-untyped-def]
        calls.append(stored)
        return original(stored, password)

    monkeypatch.setattr(hasher, "verify", spy)
    harness.sign_in("nobody01", "whatever password")
    assert calls == [None]  # None means: verified against the dummy hash, not skipped


def test_wrong_password_is_audited_without_the_password(harness: Harness) -> None:
    harness.create_user()
    harness.sign_in("cs0101", "hunter2 wrong guess")
    failed = [r for r in harness.audit() if r.type == "LoginFailed"]
    assert failed
    assert failed[-1].reason == "invalid_credentials"
    assert all("hunter2" not in r.details for r in harness.audit())


# -- lockout (CJIS AC-7) -----------------------------------------------------------------------------
@pytest.mark.parametrize("exists", [True, False])
def test_fifth_failure_locks_and_even_the_right_password_then_fails(harness: Harness, exists: bool) -> None:
    if exists:
        harness.create_user()
    for attempt in range(1, 5):
        page = harness.sign_in("cs0101", f"wrong {attempt} password")
        assert page.context["message_ids"] == ["credentials_invalid"], attempt
    fifth = harness.sign_in("cs0101", "wrong 5 password")
    assert fifth.context["message_ids"] == ["account_locked"]
    assert harness.audit_types().count("AccountLocked") == 1
    after = harness.sign_in("cs0101", STRONG)
    assert after.url.path != "/apps"
    assert after.context["message_ids"] == ["account_locked"]


def test_locked_message_is_the_same_for_unknown_and_real_accounts(harness: Harness) -> None:
    harness.create_user()
    pages = {}
    for who in ("cs0101", "nobody77"):
        for attempt in range(5):
            pages[who] = harness.sign_in(who, f"bad {attempt} guess")
    assert pages["cs0101"].context["message_ids"] == pages["nobody77"].context["message_ids"] == ["account_locked"]


def test_failures_outside_the_window_do_not_lock(harness: Harness) -> None:
    harness.create_user()
    for attempt in range(4):
        harness.sign_in("cs0101", f"wrong {attempt}")
    harness.clock.advance(timedelta(minutes=16))
    page = harness.sign_in("cs0101", "wrong again")
    assert page.context["message_ids"] == ["credentials_invalid"]


def test_success_resets_the_consecutive_count(harness: Harness) -> None:
    harness.create_user()
    for attempt in range(4):
        harness.sign_in("cs0101", f"wrong {attempt}")
    assert harness.sign_in().url.path == "/apps"
    harness.client.cookies.clear()
    for attempt in range(4):
        page = harness.sign_in("cs0101", f"wrong {attempt}")
    assert page.context["message_ids"] == ["credentials_invalid"]


def test_lock_is_not_released_by_time(harness: Harness) -> None:
    harness.create_user()
    for attempt in range(5):
        harness.sign_in("cs0101", f"wrong {attempt}")
    harness.clock.advance(timedelta(days=2))
    assert harness.sign_in().context["message_ids"] == ["account_locked"]


def test_disabled_account_cannot_sign_in(harness: Harness) -> None:
    from alacop.core.accounts import UserStatus
    from alacop.core.context import RequestContext
    from alacop.core.directory import Directory

    harness.create_user()
    harness.run(Directory(harness.portal.deps).set_status, "cs0101", UserStatus.DISABLED, RequestContext.system())
    page = harness.sign_in()
    assert page.url.path != "/apps"
    assert page.context["message_ids"] == ["account_disabled"]
    # A wrong password on a disabled account reveals nothing new.
    assert harness.sign_in("cs0101", "wrong one").context["message_ids"] == ["credentials_invalid"]


# -- forced password change --------------------------------------------------------------------------
def _change(h: Harness, page, current: str, new: str, confirm: str | None = None):  # type: ignore[no-untyped-def]
    flow = h.flow_of(page)
    return h.finish(
        h.client.post(
            f"/login/new-password?flow={flow.id}",
            data={
                "csrf_token": flow.csrf_token,
                "current_password": current,
                "new_password": new,
                "confirm_password": new if confirm is None else confirm,
            },
        )
    )


def test_temporary_password_forces_a_change_before_apps(harness: Harness) -> None:
    harness.create_user(must_change=True)
    page = harness.sign_in()
    assert page.template.name == "login/new_password.html"
    assert page.context["message_ids"] == ["password_temporary"]
    assert harness.client.get("/apps").url.path == "/login"
    new = "a fresh long passphrase 9"
    done = _change(harness, page, STRONG, new)
    assert done.url.path == "/apps"
    user = harness.user("cs0101")
    assert user is not None
    assert not user.must_change_password
    assert "PasswordChanged" in harness.audit_types()
    harness.client.cookies.clear()
    assert harness.sign_in("cs0101", new).url.path == "/apps"


def test_password_older_than_a_year_forces_a_change(harness: Harness) -> None:
    harness.create_user()
    harness.clock.advance(timedelta(days=365))
    page = harness.sign_in()
    assert page.context["message_ids"] == ["password_expired"]


@pytest.mark.parametrize(
    ("new", "confirm", "code"),
    [
        ("short", None, "password_too_short"),
        ("x" * 257, None, "password_too_long"),
        ("my cs0101 passphrase", None, "password_contains_username"),
        ("password1", None, "password_banned"),
        ("Password1", None, "password_banned"),
        ("a perfectly fine passphrase", "a different passphrase", "password_mismatch"),
        (STRONG, None, "password_reused"),
        ("tab\tinside password", None, "password_unprintable"),
    ],
)
def test_policy_refusals_tell_the_reason(harness: Harness, new: str, confirm: str | None, code: str) -> None:
    harness.create_user(must_change=True)
    page = _change(harness, harness.sign_in(), STRONG, new, confirm)
    assert page.template.name == "login/new_password.html"
    assert page.context["message_ids"] == [code]
    assert harness.audit()[-1].reason == code


@pytest.mark.parametrize("accepted", ["exactly8", "x" * 64, "x" * 256 + "", "spaces are fine here", "ünïcödé pässwörd"])
def test_policy_accepts_long_spaced_and_unicode_passwords(harness: Harness, accepted: str) -> None:
    harness.create_user(must_change=True)
    done = _change(harness, harness.sign_in(), STRONG, accepted)
    assert done.url.path == "/apps"


def test_wrong_current_password_counts_toward_lockout(harness: Harness) -> None:
    harness.create_user(must_change=True)
    page = harness.sign_in()
    for _ in range(4):
        page = _change(harness, page, "not current", "a fresh long passphrase 9")
        assert page.context["message_ids"] == ["current_password_wrong"]
    page = _change(harness, page, "not current", "a fresh long passphrase 9")
    assert page.context["message_ids"] == ["account_locked"]
    assert page.template.name == "login/identifier.html"


# -- expiry, replay, rehash --------------------------------------------------------------------------
def test_expired_flow_starts_over_with_a_message(harness: Harness) -> None:
    harness.create_user()
    page = harness.identifier("cs0101")
    harness.clock.advance(timedelta(minutes=16))
    response = harness.password(page, STRONG)
    assert response.template.name == "login/identifier.html"
    assert response.context["message_ids"] == ["flow_expired"]
    assert harness.flow_of(response).id != harness.flow_of(page).id
    assert "FlowExpired" in harness.audit_types()


def test_completed_flow_cannot_be_replayed(harness: Harness) -> None:
    harness.create_user()
    page = harness.identifier("cs0101")
    second = harness.password(page, STRONG)
    assert harness.finish(second).url.path == "/apps"
    harness.client.cookies.delete("alacop_session")
    # Replaying the second-factor step of the finished flow signs nobody in.
    flow = harness.flow_of(second)
    replay = harness.client.post(
        f"/login/second-factor?flow={flow.id}",
        data={"csrf_token": flow.csrf_token, "code": harness.totp_code(), "credential": ""},
    )
    assert replay.url.path == "/login"
    assert replay.context["message_ids"] == ["flow_expired"]
    assert "alacop_session" not in harness.client.cookies


def test_flow_is_bound_to_the_browser_that_started_it(harness: Harness) -> None:
    harness.create_user()
    page = harness.identifier("cs0101")
    flow = harness.flow_of(page)
    harness.client.cookies.clear()  # another browser: no binding cookie
    response = harness.client.post(
        f"/login/password?flow={flow.id}", data={"password": STRONG, "csrf_token": flow.csrf_token}
    )
    assert response.url.path == "/login"
    assert response.template.name == "login/identifier.html"
    assert "alacop_session" not in harness.client.cookies


def test_out_of_turn_submission_is_refused(harness: Harness) -> None:
    page = harness.start()
    flow = harness.flow_of(page)
    response = harness.client.post(
        f"/login/password?flow={flow.id}", data={"password": "x" * 10, "csrf_token": flow.csrf_token}
    )
    assert response.status_code == 400
    assert "RequestRefused" in harness.audit_types()


def test_old_hash_parameters_are_upgraded_on_sign_in(app_factory) -> None:  # type: ignore[no-untyped-def]
    real = PasswordHasher()
    h = app_factory(hasher=real)
    weak = PasswordHasher(memory_cost=1024, time_cost=1)
    user = h.create_user()

    async def weaken() -> None:
        from dataclasses import replace

        async with h.portal.deps.store.transaction() as tx:
            await tx.users.update(replace(user, password_hash=weak.hash(STRONG)))

    h.run(weaken)
    assert h.sign_in().url.path == "/apps"
    upgraded = h.user("cs0101")
    assert upgraded is not None
    assert upgraded.password_hash is not None
    assert "m=19456,t=2,p=1" in upgraded.password_hash
    assert upgraded.password_hash.startswith("$argon2id$")
    assert "PasswordRehashed" in h.audit_types()


def test_transition_table_is_closed() -> None:
    assert TRANSITIONS[LoginState.COMPLETE] == frozenset()
    flow = LoginFlow(
        id="f",
        state=LoginState.IDENTIFIER,
        issued_at=None,
        expires_at=None,  # type: ignore[arg-type]
        csrf_token="c",
        binding="b",
    )
    from alacop.core.errors import FlowInvalid

    # A password alone never completes a sign-in: password -> complete is not in the table.
    with pytest.raises(FlowInvalid):
        flow.move(LoginState.PASSWORD).move(LoginState.COMPLETE)
    with pytest.raises(FlowInvalid):
        flow.move(LoginState.RECOVERY_CODES)
    for state, targets in TRANSITIONS.items():
        if state is not LoginState.COMPLETE:
            assert LoginState.COMPLETE not in targets or state in {
                LoginState.IDENTIFIER,  # passkey sign-in: both factors at once
                LoginState.SECOND_FACTOR,
                LoginState.ENROLL,
                LoginState.RECOVERY_CODES,
            }


def test_refused_identifier_is_shown_back_for_correction(harness: Harness) -> None:
    page = harness.identifier("someone@gmail.com")
    assert 'value="someone@gmail.com"' in page.text
    hostile = harness.identifier('"><script>alert(1)</script>')
    assert "<script>alert(1)</script>" not in hostile.text
    assert "&lt;script&gt;" in hostile.text or "&#34;&gt;&lt;script&gt;" in hostile.text


def test_housekeeping_purges_only_expired_flows(harness: Harness) -> None:
    from alacop.core.housekeeping import purge_expired_flows

    old = harness.flow_of(harness.start())
    harness.clock.advance(timedelta(minutes=16))
    harness.client.cookies.clear()
    fresh = harness.flow_of(harness.start())
    assert harness.run(purge_expired_flows, harness.portal.deps) == 1

    async def ids() -> tuple[object, object]:
        async with harness.portal.deps.store.transaction() as tx:
            return await tx.flows.get(old.id), await tx.flows.get(fresh.id)

    gone, kept = harness.run(ids)
    assert gone is None
    assert kept is not None


def test_a_factor_proven_for_one_account_never_completes_another(app_factory) -> None:  # type: ignore[no-untyped-def]
    """The reported bypass: prove your own factor, change identifier, then use the victim's password."""
    from alacop.core.accounts import Role

    h: Harness = app_factory()
    h.create_user("victim01", STRONG, role=Role.COORDINATOR)  # one method: below the privileged policy
    h.create_user("attacker01", STRONG, factor=False)  # no methods: enrolment right after the password
    page = h.password(h.identifier("attacker01"), STRONG)
    assert page.template.name == "login/enroll.html"
    flow = h.flow_of(page)
    h.client.post(f"/login/enroll/choose?flow={flow.id}", data={"csrf_token": flow.csrf_token, "kind": "totp"})
    enrol = h.client.get(f"/login?flow={flow.id}")
    secret = enrol.context["totp_secret"].replace(" ", "")
    codes_page = h.client.post(
        f"/login/enroll?flow={flow.id}",
        data={
            "csrf_token": flow.csrf_token,
            "code": pyotp.TOTP(secret).at(h.clock.now()),
            "credential": "",
            "name": "mine",
        },
    )
    assert codes_page.template.name == "login/recovery_codes.html"
    # Going back to the identifier is allowed only at the password step, and it forgets the factor.
    refused = h.client.post(f"/login/change-identifier?flow={flow.id}", data={"csrf_token": flow.csrf_token})
    assert refused.status_code == 400
    assert h.flow_of(h.client.get(f"/login?flow={flow.id}")).state == LoginState.RECOVERY_CODES
    # A fresh flow for the victim asks for the victim's own second factor.
    h.client.cookies.clear()
    victim = h.password(h.identifier("victim01"), STRONG)
    assert victim.template.name == "login/second_factor.html"
    assert h.flow_of(victim).factor is None


def test_back_to_start_forgets_everything_proven() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 5, tzinfo=UTC)
    flow = LoginFlow(
        id="f",
        state=LoginState.SECOND_FACTOR,
        issued_at=now,
        expires_at=now,
        csrf_token="c",
        binding="b",
        identifier="a@alacop.gov",
        user_id="u",
        factor="totp",
        factor_user="u",
        amr=("pwd", "otp"),
        challenge="x",
        pending_totp="p",
        codes_sealed="s",
        credential_version="v",
    )
    fresh = flow.back_to_start()
    assert fresh.state is LoginState.IDENTIFIER
    for name in (
        "identifier",
        "user_id",
        "factor",
        "factor_user",
        "challenge",
        "pending_totp",
        "codes_sealed",
        "credential_version",
    ):
        assert getattr(fresh, name) is None, name
    assert fresh.amr == ()


def test_a_sign_in_begun_before_a_password_reset_cannot_finish(harness: Harness) -> None:
    from dataclasses import replace

    user = harness.create_user()
    page = harness.password(harness.identifier("cs0101"), STRONG)
    assert page.template.name == "login/second_factor.html"

    async def reset() -> None:
        async with harness.portal.deps.store.transaction() as tx:
            await tx.users.update(replace(user, password_changed_at=harness.clock.now()))

    harness.clock.advance(timedelta(seconds=1))
    harness.run(reset)
    done = harness.finish(page)
    assert done.status_code == 400
    assert "alacop_session" not in harness.client.cookies


# -- changes made by others while a sign-in is under way --------------------------------------------
def _update_stored(harness: Harness, **changes: object) -> None:
    from dataclasses import replace as dc_replace

    async def go() -> None:
        async with harness.portal.deps.store.transaction() as tx:
            stored = await tx.users.by_username("cs0101")
            assert stored is not None
            await tx.users.update(dc_replace(stored, **changes))  # type: ignore[arg-type]

    harness.run(go)


def test_an_account_disabled_mid_sign_in_gets_no_session_and_stays_disabled(harness: Harness) -> None:
    from alacop.core.accounts import UserStatus

    harness.create_user()
    page = harness.password(harness.identifier("cs0101"), STRONG)
    assert page.template.name == "login/second_factor.html"
    _update_stored(harness, status=UserStatus.DISABLED)
    finished = harness.finish(page)
    assert finished.template.name != "apps.html"
    assert "LoginSucceeded" not in harness.audit_types()
    user = harness.user("cs0101")
    assert user is not None and user.status is UserStatus.DISABLED and user.last_login_at is None


def test_a_sign_in_writes_only_its_time_and_keeps_what_others_changed(harness: Harness) -> None:
    from datetime import date

    harness.create_user()
    page = harness.password(harness.identifier("cs0101"), STRONG)
    _update_stored(harness, training_date=date(2026, 5, 1), meta={"enabled_at": "2026-05-02T00:00:00Z"})
    assert harness.finish(page).template.name == "apps.html"
    user = harness.user("cs0101")
    assert user is not None and user.last_login_at == harness.clock.now()
    assert user.training_date == date(2026, 5, 1) and user.meta == {"enabled_at": "2026-05-02T00:00:00Z"}
