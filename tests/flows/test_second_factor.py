"""Second factors through the app: first-sign-in enrolment, verification, lockout, AAL2, passkeys."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pyotp
import pytest

from alacop.core.accounts import Role, User
from alacop.core.credentials import AuthMethod, MethodKind
from alacop.core.sessions import Session
from alacop.core.tokens import new_token, token_hash
from alacop.methods import webauthn
from tests.conftest import STRONG, Harness, audit_details
from tests.support.authenticator import SoftwareAuthenticator

NEW_PASSWORD = "a fresh long passphrase 9"
COOKIE = "alacop_session"


# -- helpers --------------------------------------------------------------------------------------------
def _post(h: Harness, path: str, page: Any, **data: str) -> Any:
    flow = h.flow_of(page)
    return h.client.post(f"{path}?flow={flow.id}", data={"csrf_token": flow.csrf_token, **data})


def _template(response: Any) -> str | None:
    template = getattr(response, "template", None)
    return template.name if template is not None else None


def _session(h: Harness) -> Session:
    token = h.client.cookies.get(COOKIE)
    assert token, "no session cookie"

    async def go() -> Session | None:
        async with h.portal.deps.store.read() as db:
            return await db.sessions.get(token_hash(token))

    session = h.run(go)
    assert session is not None
    return session


def _methods(h: Harness, user_id: str) -> list[AuthMethod]:
    async def go() -> list[AuthMethod]:
        async with h.portal.deps.store.read() as db:
            return list(await db.methods.for_user(user_id))

    return h.run(go)


def _unused_codes(h: Harness, user_id: str) -> int:
    async def go() -> int:
        async with h.portal.deps.store.read() as db:
            return len(await db.recovery_codes.unused_for_user(user_id))

    return h.run(go)


def _to_second_factor(h: Harness, username: str = "cs0101", password: str = STRONG) -> Any:
    page = h.password(h.identifier(username), password)
    assert _template(page) == "login/second_factor.html", page.context.get("message_ids")
    return page


def _wrong_totp(h: Harness, secret: str | None = None) -> str:
    totp = pyotp.TOTP(secret or h.totp_secret)
    near = {totp.at(h.clock.now(), counter_offset=o) for o in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in near)


def _code(h: Harness, page: Any, code: str) -> Any:
    return _post(h, "/login/second-factor", page, code=code, credential="")


def _first_sign_in(h: Harness, username: str = "cs0101", role: Role = Role.USER) -> tuple[User, Any]:
    """A new account without factors, through the forced password change, to the enrol page."""
    user = h.create_user(username, role=role, must_change=True, factor=False)
    page = h.password(h.identifier(username), STRONG)
    assert _template(page) == "login/new_password.html"
    page = _post(
        h,
        "/login/new-password",
        page,
        current_password=STRONG,
        new_password=NEW_PASSWORD,
        confirm_password=NEW_PASSWORD,
    )
    assert _template(page) == "login/enroll.html"
    return user, page


def _enrol_totp(h: Harness, page: Any, *, name: str = "Phone") -> tuple[Any, str]:
    page = _post(h, "/login/enroll/choose", page, kind="totp")
    assert _template(page) == "login/enroll.html"
    secret = page.context["totp_secret"].replace(" ", "")
    code = pyotp.TOTP(secret).at(h.clock.now())
    return _post(h, "/login/enroll", page, code=code, credential="", name=name), secret


def _enrol_key(h: Harness, page: Any, key: SoftwareAuthenticator, *, name: str = "Blue key") -> Any:
    page = _post(h, "/login/enroll/choose", page, kind="webauthn")
    assert _template(page) == "login/enroll.html"
    credential = key.register(page.context["webauthn_options"], h.portal.deps.origin)
    return _post(h, "/login/enroll", page, code="", credential=credential, name=name)


def _acknowledge(h: Harness, page: Any) -> Any:
    assert _template(page) == "login/recovery_codes.html"
    return _post(h, "/login/recovery-codes", page)


def _user_with_key(h: Harness, key: SoftwareAuthenticator) -> User:
    """An account whose only method is a security key, enrolled at its first sign-in."""
    user, page = _first_sign_in(h)
    assert _acknowledge(h, _enrol_key(h, page, key)).url.path == "/apps"
    h.forget_session()
    return user


# -- first sign-in: enrolment -------------------------------------------------------------------------------
def test_first_sign_in_enrols_an_authenticator_app(harness: Harness) -> None:
    user, page = _first_sign_in(harness)
    assert harness.client.get("/apps").url.path == "/login"
    page = _post(harness, "/login/enroll/choose", page, kind="totp")
    assert "<svg" in page.context["totp_qr"]
    secret = page.context["totp_secret"].replace(" ", "")
    assert len(secret) == 32

    refused = _post(harness, "/login/enroll", page, code=_wrong_totp(harness, secret), credential="", name="")
    assert _template(refused) == "login/enroll.html"
    assert refused.context["message_ids"] == ["totp_enrol_code_wrong"]
    failed = harness.events("MethodEnrolmentFailed")
    assert [(r.reason, audit_details(r)["kind"]) for r in failed] == [("code_wrong", "totp")]
    assert _methods(harness, user.id) == []
    assert COOKIE not in harness.client.cookies

    # The same seed is still pending after a wrong code.
    assert refused.context["totp_secret"].replace(" ", "") == secret
    codes_page = _post(
        harness, "/login/enroll", refused, code=pyotp.TOTP(secret).at(harness.clock.now()), credential="", name="Phone"
    )
    assert _template(codes_page) == "login/recovery_codes.html"
    codes = codes_page.context["codes"]
    assert len(codes) == 10
    assert len(set(codes)) == 10
    for code in codes:
        assert code in codes_page.text
    assert _unused_codes(harness, user.id) == 10
    assert COOKIE not in harness.client.cookies  # not signed in until the codes are acknowledged

    flow_id = harness.flow_of(codes_page).id
    done = _acknowledge(harness, codes_page)
    assert done.url.path == "/apps"
    again = harness.client.get(f"/login?flow={flow_id}")
    assert again.url.path in {"/login", "/apps"}
    for code in codes:
        assert code not in again.text

    session = _session(harness)
    assert session.aal == "aal2"
    assert session.amr == ("pwd", "otp")
    assert session.second_factor == "totp"
    types = harness.audit_types()
    order = [types.index(t) for t in ("MethodAdded", "RecoveryCodesGenerated", "LoginSucceeded", "SessionStarted")]
    assert order == sorted(order)
    assert audit_details(harness.events("RecoveryCodesGenerated")[0])["codes"] == 10
    [method] = _methods(harness, user.id)
    assert (method.kind, method.name) == (MethodKind.TOTP, "Phone")


def test_first_sign_in_enrols_a_security_key(harness: Harness) -> None:
    key = SoftwareAuthenticator()
    user, page = _first_sign_in(harness)
    choose = _post(harness, "/login/enroll/choose", page, kind="webauthn")
    options = json.loads(choose.context["webauthn_options"])
    assert options["rp"]["id"] == harness.portal.deps.rp_id == "127.0.0.1"
    assert options["user"]["id"] == webauthn.handle_for(user.id)
    assert options["attestation"] == "none"

    # A key answering for another site is refused and audited.
    phished = key.register(choose.context["webauthn_options"], "https://alacop.evil.example")
    refused = _post(harness, "/login/enroll", choose, code="", credential=phished, name="")
    assert refused.context["message_ids"] == ["webauthn_enrol_failed"]
    assert [r.reason for r in harness.events("MethodEnrolmentFailed")] == ["registration_invalid"]
    # The challenge was renewed: the refused page offers a new one.
    assert json.loads(refused.context["webauthn_options"])["challenge"] != options["challenge"]

    key.credentials.clear()
    codes_page = _post(
        harness,
        "/login/enroll",
        refused,
        code="",
        credential=key.register(refused.context["webauthn_options"], harness.portal.deps.origin),
        name="Blue key",
    )
    assert len(codes_page.context["codes"]) == 10
    assert _acknowledge(harness, codes_page).url.path == "/apps"
    session = _session(harness)
    assert session.aal == "aal2"
    assert session.amr == ("pwd", "hwk")
    assert session.second_factor == "webauthn"
    [method] = _methods(harness, user.id)
    assert method.kind is MethodKind.WEBAUTHN
    assert method.credential_id == key.credential().id
    assert method.discoverable is True
    assert method.name == "Blue key"
    types = harness.audit_types()
    for kind in ("MethodAdded", "RecoveryCodesGenerated", "LoginSucceeded", "SessionStarted"):
        assert kind in types


def test_synced_passkey_enrolled_at_first_sign_in_is_recorded_as_software_held(harness: Harness) -> None:
    _, page = _first_sign_in(harness)
    assert _acknowledge(harness, _enrol_key(harness, page, SoftwareAuthenticator(backup=True))).url.path == "/apps"
    assert _session(harness).amr == ("pwd", "swk")


def test_coordinator_needs_two_methods_of_different_kinds(harness: Harness) -> None:
    user, page = _first_sign_in(harness, role=Role.COORDINATOR)
    assert page.context["required"] == 2
    assert page.context["privileged"] is True

    page, _ = _enrol_totp(harness, page, name="Phone")
    assert _template(page) == "login/enroll.html"
    assert page.context["message_ids"] == ["method_added"]
    assert len(page.context["methods"]) == 1

    page, _ = _enrol_totp(harness, page, name="Tablet")
    assert _template(page) == "login/enroll.html", "two authenticator apps are one kind"
    assert len(page.context["methods"]) == 2
    assert COOKIE not in harness.client.cookies
    assert harness.client.get("/apps").url.path == "/login"

    page = _enrol_key(harness, page, SoftwareAuthenticator())
    assert _template(page) == "login/recovery_codes.html"
    assert _acknowledge(harness, page).url.path == "/apps"
    assert {m.kind for m in _methods(harness, user.id)} == {MethodKind.TOTP, MethodKind.WEBAUTHN}
    # The sign-in's own factor was the first one proven.
    assert _session(harness).amr == ("pwd", "otp")


def test_password_alone_cannot_enrol_another_method(harness: Harness) -> None:
    user = harness.create_user()
    page = _to_second_factor(harness)
    for kind in ("totp", "webauthn"):
        refused = _post(harness, "/login/enroll/choose", page, kind=kind)
        assert refused.status_code == 400
    refused = _post(harness, "/login/enroll", page, code=harness.totp_code(), credential="", name="")
    assert refused.status_code == 400
    assert "MethodAdded" not in harness.audit_types()
    assert len(_methods(harness, user.id)) == 1
    assert COOKIE not in harness.client.cookies
    # The flow itself is untouched: the second factor still signs in.
    assert harness.finish(harness.client.get(f"/login?flow={harness.flow_of(page).id}")).url.path == "/apps"


def test_coordinator_with_one_method_proves_it_before_adding_the_second(harness: Harness) -> None:
    harness.create_user(role=Role.COORDINATOR)
    page = _to_second_factor(harness)
    assert _post(harness, "/login/enroll/choose", page, kind="webauthn").status_code == 400
    harness.clock.advance(timedelta(seconds=30))
    enrol = _code(harness, page, harness.totp_code())
    assert _template(enrol) == "login/enroll.html"
    # Recovery codes are already held: adding the key completes the sign-in straight away.
    done = _enrol_key(harness, enrol, SoftwareAuthenticator())
    assert done.url.path == "/apps"
    assert _session(harness).amr == ("pwd", "otp")


# -- second factor at sign-in ---------------------------------------------------------------------------------
def test_right_totp_signs_in(harness: Harness) -> None:
    harness.create_user()
    page = _to_second_factor(harness)
    assert page.context["flow"].method_kind == "totp"
    assert [c.kind for c in page.context["choices"]] == ["totp", "recovery_code"]
    done = _code(harness, page, harness.totp_code())
    assert done.url.path == "/apps"
    session = _session(harness)
    assert (session.aal, session.amr, session.second_factor) == ("aal2", ("pwd", "otp"), "totp")
    success = harness.events("LoginSucceeded")[-1]
    assert audit_details(success)["second_factor"] == "totp"


def test_wrong_totp_is_refused_and_audited(harness: Harness) -> None:
    harness.create_user()
    page = _to_second_factor(harness)
    refused = _code(harness, page, _wrong_totp(harness))
    assert _template(refused) == "login/second_factor.html"
    assert refused.context["message_ids"] == ["totp_code_wrong"]
    [failed] = harness.events("SecondFactorFailed")
    assert failed.reason == "totp_code_wrong"
    assert audit_details(failed)["consecutive_failures"] == 1
    assert COOKIE not in harness.client.cookies
    assert _code(harness, refused, harness.totp_code()).url.path == "/apps"


def test_code_is_accepted_once_per_time_step(harness: Harness) -> None:
    harness.create_user()
    code = harness.totp_code()
    assert _code(harness, _to_second_factor(harness), code).url.path == "/apps"
    harness.forget_session()
    page = _to_second_factor(harness)
    replayed = _code(harness, page, code)
    assert replayed.context["message_ids"] == ["totp_code_replayed"]
    assert harness.events("SecondFactorFailed")[-1].reason == "totp_code_replayed"
    # An older code still inside the skew window is spent too.
    older = _code(harness, replayed, harness.totp_code(-1))
    assert older.context["message_ids"] == ["totp_code_replayed"]
    assert COOKIE not in harness.client.cookies
    harness.clock.advance(timedelta(seconds=30))
    assert _code(harness, older, harness.totp_code()).url.path == "/apps"


@pytest.mark.parametrize("offset", [-1, 1])
def test_one_step_of_clock_skew_is_accepted(harness: Harness, offset: int) -> None:
    harness.create_user()
    harness.clock.advance(timedelta(seconds=15))
    assert _code(harness, _to_second_factor(harness), harness.totp_code(offset)).url.path == "/apps"


@pytest.mark.parametrize("offset", [-2, 2])
def test_two_steps_of_clock_skew_are_refused(harness: Harness, offset: int) -> None:
    harness.create_user()
    harness.clock.advance(timedelta(seconds=15))
    code = harness.totp_code(offset)
    if code in {harness.totp_code(o) for o in (-1, 0, 1)}:
        pytest.skip("random collision between time steps")
    refused = _code(harness, _to_second_factor(harness), code)
    assert refused.context["message_ids"] == ["totp_code_wrong"]
    assert COOKIE not in harness.client.cookies


def test_recovery_code_signs_in_once(harness: Harness) -> None:
    user = harness.create_user()
    page = _to_second_factor(harness)
    page = _post(harness, "/login/method", page, kind="recovery_code")
    assert _template(page) == "login/second_factor.html"
    assert page.context["flow"].method_kind == "recovery_code"
    code = harness.recovery_codes[3]
    done = _code(harness, page, code.lower().replace("-", " "))
    assert done.url.path == "/apps"
    session = _session(harness)
    assert session.second_factor == "recovery_code"
    assert session.aal == "aal2"
    assert session.amr == ("pwd", "otp")
    used = harness.events("RecoveryCodeUsed")
    assert [audit_details(r)["codes_left"] for r in used] == [9]
    assert _unused_codes(harness, user.id) == 9

    harness.forget_session()
    page = _post(harness, "/login/method", _to_second_factor(harness), kind="recovery_code")
    refused = _code(harness, page, code)
    assert refused.context["message_ids"] == ["recovery_code_wrong"]
    assert harness.events("SecondFactorFailed")[-1].reason == "recovery_code_wrong"
    assert COOKIE not in harness.client.cookies
    assert _code(harness, refused, harness.recovery_codes[4]).url.path == "/apps"


def test_a_method_the_account_lacks_cannot_be_chosen(harness: Harness) -> None:
    harness.create_user()
    page = _to_second_factor(harness)
    assert _post(harness, "/login/method", page, kind="webauthn").status_code == 400


def test_security_key_signs_in_and_its_counter_is_kept(harness: Harness) -> None:
    key = SoftwareAuthenticator(user_verification=False)
    user = _user_with_key(harness, key)
    page = _to_second_factor(harness, password=NEW_PASSWORD)
    assert page.context["flow"].method_kind == "webauthn"
    options = json.loads(page.context["webauthn_options"])
    assert [c["id"] for c in options["allowCredentials"]] == [key.credential().id]
    assert options["userVerification"] == "preferred"
    done = _post(
        harness,
        "/login/second-factor",
        page,
        code="",
        credential=key.get(page.context["webauthn_options"], harness.portal.deps.origin),
    )
    assert done.url.path == "/apps"
    session = _session(harness)
    assert (session.amr, session.second_factor) == (("pwd", "hwk"), "webauthn")
    [method] = _methods(harness, user.id)
    assert method.sign_count == 1


def test_security_key_assertion_cannot_be_replayed(harness: Harness) -> None:
    key = SoftwareAuthenticator()
    _user_with_key(harness, key)
    page = _to_second_factor(harness, password=NEW_PASSWORD)
    assertion = key.get(page.context["webauthn_options"], harness.portal.deps.origin)
    assert _post(harness, "/login/second-factor", page, code="", credential=assertion).url.path == "/apps"
    harness.forget_session()
    page = _to_second_factor(harness, password=NEW_PASSWORD)
    refused = _post(harness, "/login/second-factor", page, code="", credential=assertion)
    assert refused.context["message_ids"] == ["webauthn_failed"]
    assert COOKIE not in harness.client.cookies


def test_regressing_sign_count_is_refused_and_audited(harness: Harness) -> None:
    key = SoftwareAuthenticator()
    user = _user_with_key(harness, key)
    page = _to_second_factor(harness, password=NEW_PASSWORD)
    key.set_sign_count(41)
    ok = _post(
        harness,
        "/login/second-factor",
        page,
        code="",
        credential=key.get(page.context["webauthn_options"], harness.portal.deps.origin),
    )
    assert ok.url.path == "/apps"
    assert _methods(harness, user.id)[0].sign_count == 42
    harness.forget_session()

    page = _to_second_factor(harness, password=NEW_PASSWORD)
    cloned = key.get(page.context["webauthn_options"], harness.portal.deps.origin, sign_count=7)
    refused = _post(harness, "/login/second-factor", page, code="", credential=cloned)
    assert _template(refused) == "login/second_factor.html"
    assert refused.context["message_ids"] == ["webauthn_failed"]
    assert COOKIE not in harness.client.cookies
    [regressed] = harness.events("SignCountRegressed")
    assert regressed.reason == "possible_cloned_authenticator"
    assert regressed.subject_id == user.id
    assert audit_details(regressed)["stored_sign_count"] == 42
    assert harness.events("SecondFactorFailed")[-1].reason == "sign_count_regressed"
    assert _methods(harness, user.id)[0].sign_count == 42


def test_unregistered_key_is_refused(harness: Harness) -> None:
    _user_with_key(harness, SoftwareAuthenticator())
    page = _to_second_factor(harness, password=NEW_PASSWORD)
    stranger = SoftwareAuthenticator()
    stranger.register(
        webauthn.registration_options(
            harness.portal.login.factors.rp,
            user_handle=webauthn.handle_for("00000000-0000-4000-8000-000000000000"),
            username="x",
            display_name="x",
            challenge=webauthn.new_challenge(),
            existing=[],
        ),
        harness.portal.deps.origin,
    )
    assertion = stranger.get(page.context["webauthn_options"], harness.portal.deps.origin, stranger.credential().id)
    refused = _post(harness, "/login/second-factor", page, code="", credential=assertion)
    assert refused.context["message_ids"] == ["webauthn_failed"]
    assert harness.events("SecondFactorFailed")[-1].reason == "webauthn_unknown_credential"


# -- lockout (CJIS AC-7) -------------------------------------------------------------------------------------
def test_five_second_factor_failures_lock_the_account(harness: Harness) -> None:
    harness.create_user()
    page = _to_second_factor(harness)
    for attempt in range(1, 5):
        page = _code(harness, page, _wrong_totp(harness))
        assert page.context["message_ids"] == ["totp_code_wrong"], attempt
    locked = _code(harness, page, _wrong_totp(harness))
    assert _template(locked) == "login/identifier.html"
    assert locked.context["message_ids"] == ["account_locked"]
    assert "AccountLocked" in harness.audit_types()
    assert [audit_details(r)["consecutive_failures"] for r in harness.events("SecondFactorFailed")] == [1, 2, 3, 4, 5]

    harness.clock.advance(timedelta(seconds=30))
    again = harness.password(harness.identifier("cs0101"), STRONG)
    assert _template(again) == "login/password.html"
    assert again.context["message_ids"] == ["account_locked"]
    assert COOKIE not in harness.client.cookies


def test_correct_password_does_not_reset_second_factor_failures(harness: Harness) -> None:
    harness.create_user()
    page = _to_second_factor(harness)
    for _ in range(4):
        page = _code(harness, page, _wrong_totp(harness))
    assert page.context["message_ids"] == ["totp_code_wrong"]
    page = _to_second_factor(harness)  # a new sign-in with the right password
    locked = _code(harness, page, _wrong_totp(harness))
    assert locked.context["message_ids"] == ["account_locked"]
    assert audit_details(harness.events("SecondFactorFailed")[-1])["consecutive_failures"] == 5


def test_completed_sign_in_resets_second_factor_failures(harness: Harness) -> None:
    harness.create_user()
    page = _to_second_factor(harness)
    for _ in range(4):
        page = _code(harness, page, _wrong_totp(harness))
    assert _code(harness, page, harness.totp_code()).url.path == "/apps"
    harness.forget_session()
    harness.clock.advance(timedelta(seconds=30))
    page = _to_second_factor(harness)
    for _ in range(4):
        page = _code(harness, page, _wrong_totp(harness))
    assert page.context["message_ids"] == ["totp_code_wrong"]
    assert _code(harness, page, harness.totp_code()).url.path == "/apps"


def test_locking_at_the_second_factor_ends_open_sessions(harness: Harness) -> None:
    harness.create_user()
    harness.sign_in()
    assert harness.client.get("/apps").url.path == "/apps"
    token = harness.client.cookies.get(COOKIE)
    harness.forget_session()
    page = _to_second_factor(harness)
    for _ in range(5):
        page = _code(harness, page, _wrong_totp(harness))
    harness.client.cookies.set(COOKIE, token or "", domain="127.0.0.1")
    assert harness.client.get("/apps").url.path == "/login"


# -- AAL2 only -----------------------------------------------------------------------------------------------
def _planted_session(h: Harness, user: User, aal: str) -> str:
    token = new_token()
    now = h.clock.now()

    async def go() -> None:
        async with h.portal.deps.store.transaction() as tx:
            await tx.sessions.add(
                Session(
                    id_hash=token_hash(token),
                    user_id=user.id,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + timedelta(hours=12),
                    auth_time=now,
                    aal=aal,
                    amr=("pwd",) if aal == "aal1" else ("pwd", "otp"),
                    source_ip="127.0.0.1",
                    user_agent="test",
                )
            )

    h.run(go)
    h.client.cookies.set(COOKIE, token, domain="127.0.0.1")
    return token


def test_apps_refuses_an_aal1_session(harness: Harness) -> None:
    user = harness.create_user()
    _planted_session(harness, user, "aal1")
    refused = harness.client.get("/apps", follow_redirects=False)
    assert refused.status_code == 303
    assert refused.headers["location"] == "/login"
    assert "Casey Smith" not in refused.text
    # The same session at AAL2 is let in, so the refusal above is about the level alone.
    _planted_session(harness, user, "aal2")
    assert harness.client.get("/apps", follow_redirects=False).status_code == 200


def test_sign_in_page_is_shown_to_an_aal1_session(harness: Harness) -> None:
    user = harness.create_user()
    _planted_session(harness, user, "aal1")
    page = harness.client.get("/login", follow_redirects=False)
    assert page.status_code == 200


# -- passkey sign-in (policy passkey_sign_in) ----------------------------------------------------------------
@pytest.fixture
def passkey_harness(app_factory: Any) -> Harness:
    h: Harness = app_factory(ALACOP_POLICY__PASSKEY_SIGN_IN="true")
    return h


def _options_page(h: Harness) -> Any:
    page = h.client.get("/login/options")
    assert page.status_code == 200
    return page


def _passkey(h: Harness, page: Any, credential: str) -> Any:
    return _post(h, "/login/passkey", page, credential=credential)


def test_passkey_signs_in_without_a_password(passkey_harness: Harness) -> None:
    h = passkey_harness
    key = SoftwareAuthenticator(user_verification=True)
    user = _user_with_key(h, key)
    assert _methods(h, user.id)[0].discoverable is True
    page = _options_page(h)
    options = json.loads(page.context["webauthn_options"])
    assert options["allowCredentials"] == []
    assert options["userVerification"] == "required"
    assert options["rpId"] == "127.0.0.1"
    assert 'data-webauthn="get"' in page.text
    done = _passkey(h, page, key.get(page.context["webauthn_options"], h.portal.deps.origin))
    assert done.url.path == "/apps"
    session = _session(h)
    assert session.aal == "aal2"
    assert "hwk" in session.amr
    assert "user" in session.amr
    assert session.second_factor == "passkey"
    assert audit_details(h.events("LoginSucceeded")[-1])["second_factor"] == "passkey"


def test_passkey_without_user_verification_is_refused(passkey_harness: Harness) -> None:
    h = passkey_harness
    key = SoftwareAuthenticator(user_verification=False)
    _user_with_key(h, key)
    page = _options_page(h)
    refused = _passkey(h, page, key.get(page.context["webauthn_options"], h.portal.deps.origin))
    assert refused.url.path == "/login/options"
    assert refused.context["message_ids"] == ["webauthn_failed"]
    assert COOKIE not in h.client.cookies
    failed = h.events("LoginFailed")[-1]
    assert failed.reason == "assertion_invalid"
    assert audit_details(failed)["step"] == "passkey"
    # The retry page has a fresh challenge.
    retry = json.loads(refused.context["webauthn_options"])
    assert retry["challenge"] != json.loads(page.context["webauthn_options"])["challenge"]
    assert retry["userVerification"] == "required"
    assert h.audit_types()[-1] == "LoginFailed"
    assert len(h.events("SessionStarted")) == 1  # only the enrolling sign-in's


def test_passkey_refused_without_user_verification_then_accepted_with_it(passkey_harness: Harness) -> None:
    h = passkey_harness
    key = SoftwareAuthenticator(user_verification=False)
    _user_with_key(h, key)
    page = _options_page(h)
    refused = _passkey(h, page, key.get(page.context["webauthn_options"], h.portal.deps.origin))
    assert refused.context["message_ids"] == ["webauthn_failed"]
    ok = _passkey(h, refused, key.get(refused.context["webauthn_options"], h.portal.deps.origin, uv=True))
    assert ok.url.path == "/apps"


def test_passkey_assertion_cannot_be_replayed(passkey_harness: Harness) -> None:
    h = passkey_harness
    key = SoftwareAuthenticator()
    _user_with_key(h, key)
    page = _options_page(h)
    assertion = key.get(page.context["webauthn_options"], h.portal.deps.origin)
    assert _passkey(h, page, assertion).url.path == "/apps"
    h.forget_session()
    again = _passkey(h, _options_page(h), assertion)
    assert again.url.path == "/login/options"
    assert COOKIE not in h.client.cookies


def test_passkey_does_not_open_a_locked_account(passkey_harness: Harness) -> None:
    h = passkey_harness
    key = SoftwareAuthenticator()
    _user_with_key(h, key)
    for _ in range(5):
        h.password(h.identifier("cs0101"), "not the password at all 1")
    page = _options_page(h)
    refused = _passkey(h, page, key.get(page.context["webauthn_options"], h.portal.deps.origin))
    assert refused.context["message_ids"] == ["account_locked"]
    assert COOKIE not in h.client.cookies


def test_passkey_sign_in_is_off_by_default(harness: Harness) -> None:
    key = SoftwareAuthenticator()
    _user_with_key(harness, key)
    page = _options_page(harness)
    assert "not supported" in page.text
    assert "webauthn_options" not in page.context
    assert 'data-webauthn="get"' not in page.text
    # Even a well-formed assertion for a flow of this browser is refused.
    succeeded = len(harness.events("LoginSucceeded"))
    flow_page = harness.start()
    options = webauthn.authentication_options(
        harness.portal.login.factors.rp, challenge=webauthn.new_challenge(), methods=[], require_uv=True
    )
    refused = _passkey(harness, flow_page, key.get(options, harness.portal.deps.origin))
    assert 400 <= refused.status_code < 500
    assert COOKIE not in harness.client.cookies
    assert len(harness.events("LoginSucceeded")) == succeeded
    assert harness.audit_types()[-1] == "RequestRefused"
