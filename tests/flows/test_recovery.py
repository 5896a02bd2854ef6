"""“Can't access your account?” through the app: CAPTCHA, verification, reset, unlock, sameness, limits."""

from __future__ import annotations

import email
import email.policy
import json
import re
from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pyotp
import pytest

from alacop.core.accounts import Role, User, UserStatus
from alacop.core.captcha import ALPHABET, answer_for
from alacop.core.context import RequestContext
from alacop.core.directory import Directory
from tests.conftest import STRONG, Harness, audit_details
from tests.support.authenticator import SoftwareAuthenticator, b64url

SEED = "seed"
NEW_PASSWORD = "a fresh long passphrase 9"
GENERIC = ["recovery_not_verified"]
LOCKED = ["recovery_locked"]

App = Callable[..., Harness]


# -- helpers ------------------------------------------------------------------------------------------
def _app(app_factory: App, **env: Any) -> Harness:
    env.setdefault("ALACOP_POLICY__RATE_LIMIT_PER_MINUTE", 1000)
    return app_factory(ALACOP_ENV="test", ALACOP_CAPTCHA_SEED=SEED, **env)


@pytest.fixture
def h(app_factory: App) -> Harness:
    return _app(app_factory)


def _template(response: Any) -> str | None:
    template = getattr(response, "template", None)
    return template.name if template is not None else None


def _ids(response: Any) -> list[str]:
    return list(response.context["message_ids"])


def _flow(response: Any) -> Any:
    return response.context["flow"]


def _post(h: Harness, path: str, page: Any, **data: str) -> Any:
    flow = _flow(page)
    return h.client.post(f"{path}?flow={flow.id}", data={"csrf_token": flow.csrf_token, **data})


def _answer(page: Any) -> str:
    return answer_for(SEED.encode(), page.context["captcha_nonce"])


def _wrong_answer(page: Any) -> str:
    right = _answer(page)
    return next(c for c in ALPHABET if c != right[0]) + right[1:]


def _start(h: Harness) -> Any:
    page = h.client.get("/recover")
    assert page.status_code == 200
    assert _template(page) == "recover/account_type.html"
    return page


def _identify_page(h: Harness) -> Any:
    page = _post(h, "/recover/type", _start(h), type="work")
    assert _template(page) == "recover/identify.html"
    return page


def _identify(h: Harness, identifier: str, page: Any | None = None, answer: str | None = None) -> Any:
    page = page or _identify_page(h)
    return _post(h, "/recover/identify", page, identifier=identifier, captcha=answer or _answer(page))


def _to_verify(h: Harness, identifier: str = "cs0101") -> Any:
    page = _identify(h, identifier)
    assert _template(page) == "recover/verify.html", page.context.get("message_ids")
    return page


def _method(h: Harness, page: Any, kind: str) -> Any:
    page = _post(h, "/recover/method", page, kind=kind)
    assert _template(page) == "recover/verify.html"
    assert _flow(page).method_kind == kind
    return page


def _code(h: Harness, page: Any, code: str) -> Any:
    return _post(h, "/recover/verify", page, code=code, credential="")


def _totp(h: Harness, page: Any) -> Any:
    """The current authenticator code, a new 30-second step each time so no code is replayed."""
    h.clock.advance(timedelta(seconds=30))
    if _flow(page).method_kind != "totp":
        page = _method(h, page, "totp")
    return _code(h, page, h.totp_code())


def _wrong_totp(h: Harness) -> str:
    totp = pyotp.TOTP(h.totp_secret)
    near = {totp.at(h.clock.now(), counter_offset=o) for o in (-2, -1, 0, 1, 2)}
    return next(c for c in ("000000", "111111", "222222", "333333", "444444", "555555") if c not in near)


def _key_answer(h: Harness, page: Any, key: SoftwareAuthenticator, credential_id: str | None = None) -> Any:
    if _flow(page).method_kind != "webauthn" or "webauthn_options" not in page.context:
        page = _method(h, page, "webauthn")
    credential = key.get(page.context["webauthn_options"], h.portal.deps.origin, credential_id)
    return _post(h, "/recover/verify", page, code="", credential=credential)


def _stranger_credential(key: SoftwareAuthenticator) -> str:
    """A credential this portal never registered, held by `key`."""
    options = {
        "rp": {"id": "127.0.0.1", "name": "x"},
        "user": {"id": b64url(b"stranger"), "name": "x", "displayName": "x"},
        "challenge": b64url(b"0" * 32),
        "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
    }
    return str(json.loads(key.register(json.dumps(options), "http://127.0.0.1:8000"))["id"])


def _to_choose(h: Harness, identifier: str = "cs0101") -> Any:
    page = _totp(h, _to_verify(h, identifier))
    assert _template(page) == "recover/choose.html", page.context.get("message_ids")
    return page


def _reset(h: Harness, page: Any, new: str = NEW_PASSWORD, confirm: str | None = None) -> Any:
    return _post(h, "/recover/password", page, new_password=new, confirm_password=new if confirm is None else confirm)


def _options(page: Any) -> dict[str, Any]:
    options: dict[str, Any] = json.loads(page.context["webauthn_options"])
    return options


def _signed_in(h: Harness) -> bool:
    return bool(h.client.get("/apps").url.path == "/apps")


def _add_key(h: Harness, key: SoftwareAuthenticator, username: str = "cs0101") -> None:
    """Sign in and add a security key; a privileged account is asked for it at sign-in."""
    page = h.finish(h.password(h.identifier(username), STRONG))
    if _template(page) == "login/enroll.html":
        page = _post(h, "/login/enroll/choose", page, kind="webauthn")
        credential = key.register(page.context["webauthn_options"], h.portal.deps.origin)
        page = _post(h, "/login/enroll", page, code="", credential=credential, name="Blue key")
        if _template(page) == "login/recovery_codes.html":
            page = _post(h, "/login/recovery-codes", page)
        assert page.url.path == "/apps", _template(page)
    else:
        assert page.url.path == "/apps", _template(page)
        token = h.client.get("/account/security").context["csrf_token"]
        added = h.client.post("/account/security/add", data={"csrf_token": token, "kind": "webauthn"})
        assert _template(added) == "account/add_method.html"
        credential = key.register(added.context["webauthn_options"], h.portal.deps.origin)
        done = h.client.post(
            f"/account/security/add?flow={added.context['flow'].id}",
            data={"csrf_token": token, "code": "", "credential": credential, "name": "Blue key"},
            follow_redirects=False,
        )
        assert done.headers["location"] == "/account/security?done=method_added"
    h.forget_session()


def _throttle(h: Harness, key: str) -> Any:
    async def go() -> Any:
        async with h.portal.deps.store.read() as db:
            return await db.throttles.get(key)

    return h.run(go)


def _unused_codes(h: Harness, user: User) -> int:
    async def go() -> int:
        async with h.portal.deps.store.read() as db:
            return len(await db.recovery_codes.unused_for_user(user.id))

    return h.run(go)


def _mail(h: Harness) -> list[EmailMessage]:
    folder = h.portal.settings.data_dir / "outbox"
    files = sorted(folder.glob("*.eml")) if folder.exists() else []
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in files
    ]


def _subjects(h: Harness) -> list[str]:
    return [str(m["Subject"]) for m in _mail(h)]


def _lock_sign_in(h: Harness, username: str = "cs0101") -> None:
    for attempt in range(5):
        page = h.sign_in(username, f"wrong guess {attempt}")
    assert _ids(page) == ["account_locked"]


# -- 1. account type ---------------------------------------------------------------------------------------
def test_personal_account_explains_and_goes_back(h: Harness) -> None:
    start = _start(h)
    personal = _post(h, "/recover/type", start, type="personal")
    assert personal.status_code == 200
    assert _template(personal) == "recover/personal.html"
    assert _flow(personal).state == "personal"
    back = _post(h, "/recover/type", personal, type="back")
    assert _template(back) == "recover/account_type.html"
    assert _flow(back).id == _flow(start).id
    # From the explanation only "back" is possible; an unknown type is refused.
    assert _post(h, "/recover/type", _post(h, "/recover/type", back, type="personal"), type="work").status_code == 400
    assert _post(h, "/recover/type", _start(h), type="family").status_code == 400


def test_work_account_shows_a_captcha_picture_and_audio_for_this_browser_only(h: Harness, app_factory: App) -> None:
    page = _identify_page(h)
    flow, nonce = _flow(page), page.context["captcha_nonce"]
    assert f"/recover/captcha.png?flow={flow.id}&amp;c={nonce}" in page.text
    assert f"/recover/captcha.wav?flow={flow.id}&amp;c={nonce}" in page.text

    picture = h.client.get(f"/recover/captcha.png?flow={flow.id}&c={nonce}")
    assert picture.status_code == 200
    assert picture.headers["content-type"] == "image/png"
    assert picture.headers["cache-control"] == "no-store"
    assert picture.content[:8] == b"\x89PNG\r\n\x1a\n"
    audio = h.client.get(f"/recover/captcha.wav?flow={flow.id}&c={nonce}")
    assert audio.status_code == 200
    assert audio.headers["content-type"].startswith("audio/wav")
    assert audio.content[:4] == b"RIFF"
    assert audio.content[8:12] == b"WAVE"
    assert len(audio.content) > 20_000

    for suffix in ("png", "wav"):
        assert h.client.get(f"/recover/captcha.{suffix}?flow={flow.id}&c=someone-else").status_code == 404
        assert h.client.get(f"/recover/captcha.{suffix}?flow={flow.id}").status_code == 404
        assert h.client.get(f"/recover/captcha.{suffix}?flow=nope&c={nonce}").status_code == 404

    other = _app(app_factory, clock=h.clock)
    for suffix in ("png", "wav"):
        assert other.client.get(f"/recover/captcha.{suffix}?flow={flow.id}&c={nonce}").status_code == 404

    # Once the identifier is accepted, the challenge is gone.
    other_page = _identify_page(h)
    moved = _identify(h, "cs0101", other_page)
    assert _template(moved) == "recover/verify.html"
    gone = other_page.context["captcha_nonce"]
    assert h.client.get(f"/recover/captcha.png?flow={_flow(moved).id}&c={gone}").status_code == 404

    # A new challenge retires the old nonce's picture.
    renewed = _post(h, "/recover/captcha/new", page)
    assert h.client.get(f"/recover/captcha.png?flow={flow.id}&c={nonce}").status_code == 404
    fresh = renewed.context["captcha_nonce"]
    assert h.client.get(f"/recover/captcha.png?flow={flow.id}&c={fresh}").status_code == 200


# -- 2. CAPTCHA and identifier ----------------------------------------------------------------------------
def test_wrong_captcha_is_refused_audited_and_replaced(h: Harness) -> None:
    h.create_user()
    page = _identify_page(h)
    old = page.context["captcha_nonce"]
    refused = _identify(h, "cs0101", page, _wrong_answer(page))
    assert refused.status_code == 200
    assert _template(refused) == "recover/identify.html"
    assert _ids(refused) == ["captcha_wrong"]
    assert refused.context["captcha_nonce"] != old
    assert _flow(refused).typed == "cs0101"
    assert 'value="cs0101"' in refused.text
    [failed] = h.events("CaptchaFailed")
    assert failed.reason == "captcha_wrong"
    assert "RecoveryStarted" not in h.audit_types()
    # The old picture is gone with its nonce.
    assert h.client.get(f"/recover/captcha.png?flow={_flow(page).id}&c={old}").status_code == 404

    # The old nonce's correct answer is spent: it does not pass against the new challenge.
    replay = _identify(h, "cs0101", refused, answer_for(SEED.encode(), old))
    assert _ids(replay) == ["captcha_wrong"]
    assert len(h.events("CaptchaFailed")) == 2

    accepted = _identify(h, "cs0101", replay)
    assert _template(accepted) == "recover/verify.html"
    assert h.events("RecoveryStarted")


def test_a_correct_captcha_is_spent_by_its_submission(h: Harness) -> None:
    page = _identify_page(h)
    answer = _answer(page)
    refused = _identify(h, "someone@gmail.com", page, answer)
    assert _ids(refused) == ["identifier_wrong_domain"]
    assert refused.context["captcha_nonce"] != page.context["captcha_nonce"]
    # Right identifier now, but the answer belonged to the nonce the first submission spent.
    again = _identify(h, "cs0101", refused, answer)
    assert _ids(again) == ["captcha_wrong"]
    assert _template(again) == "recover/identify.html"


def test_captcha_answer_is_case_insensitive(h: Harness) -> None:
    page = _identify_page(h)
    answer = _answer(page)
    spaced = " ".join(answer.lower())
    verify = _identify(h, "cs0101", page, spaced)
    assert _template(verify) == "recover/verify.html"


def test_captcha_expires_after_five_minutes(h: Harness) -> None:
    page = _identify_page(h)
    h.clock.advance(timedelta(minutes=5, seconds=1))
    refused = _identify(h, "cs0101", page)
    assert _ids(refused) == ["captcha_wrong"]
    assert _template(refused) == "recover/identify.html"
    # The replacement issued just now works.
    assert _template(_identify(h, "cs0101", refused)) == "recover/verify.html"


def test_captcha_at_exactly_five_minutes_is_still_accepted(h: Harness) -> None:
    page = _identify_page(h)
    h.clock.advance(timedelta(minutes=5))
    assert _template(_identify(h, "cs0101", page)) == "recover/verify.html"


def test_new_challenge_replaces_the_nonce(h: Harness) -> None:
    page = _identify_page(h)
    old = page.context["captcha_nonce"]
    renewed = _post(h, "/recover/captcha/new", page)
    assert _template(renewed) == "recover/identify.html"
    assert renewed.context["captcha_nonce"] != old
    assert _ids(renewed) == []
    # The old challenge's answer no longer passes.
    assert _ids(_identify(h, "cs0101", renewed, answer_for(SEED.encode(), old))) == ["captcha_wrong"]


@pytest.mark.parametrize("typed", ["someone@gmail.com", "cs0101@alacop.gov.evil.com", "cs0101@alea.gov"])
def test_identifier_at_another_domain_is_refused(h: Harness, typed: str) -> None:
    page = _identify(h, typed)
    assert _template(page) == "recover/identify.html"
    assert _ids(page) == ["identifier_wrong_domain"]
    assert "@alacop.gov" in page.text
    assert "RecoveryStarted" not in h.audit_types()


@pytest.mark.parametrize("typed", ["cs0101", "  CS0101 ", "cs0101@alacop.gov", "CS0101@ALACOP.GOV"])
def test_bare_username_is_completed_with_the_domain(h: Harness, typed: str) -> None:
    page = _identify(h, typed)
    assert _template(page) == "recover/verify.html"
    assert _flow(page).identifier == "cs0101@alacop.gov"
    assert "cs0101@alacop.gov" in page.text
    assert h.audit()[-1].type == "RecoveryStarted"
    assert h.audit()[-1].subject_name == "cs0101@alacop.gov"


# -- 3. the happy paths ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["totp", "webauthn", "recovery_code"])
def test_forgot_password_with_each_method(app_factory: App, method: str) -> None:
    h = _app(app_factory)
    user = h.create_user()
    key = SoftwareAuthenticator()
    if method == "webauthn":
        _add_key(h, key)
    other = _app(app_factory, clock=h.clock)
    other.totp_secret = h.totp_secret
    assert other.sign_in().url.path == "/apps"
    _lock_sign_in(h)
    assert _signed_in(other), "a sign-in lock alone does not end sessions"

    page = _to_verify(h)
    assert page.context["choices"] == [
        ("totp", "Enter a code from my authenticator app"),
        ("webauthn", "Use my security key or passkey"),
        ("recovery_code", "Enter a recovery code"),
    ]
    if method == "totp":
        chosen = _totp(h, page)
    elif method == "webauthn":
        chosen = _key_answer(h, page, key)
    else:
        chosen = _code(h, _method(h, page, "recovery_code"), h.recovery_codes[0])
    assert _template(chosen) == "recover/choose.html", chosen.context.get("message_ids")
    [verified] = h.events("RecoveryVerified")
    assert verified.reason == method

    form = _post(h, "/recover/choose", chosen, action="reset")
    assert _template(form) == "recover/new_password.html"

    for new, confirm, problem in (
        ("short1", "short1", "password_too_short"),
        ("password123", "password123", "password_banned"),
        (NEW_PASSWORD, NEW_PASSWORD + "x", "password_mismatch"),
        (STRONG, STRONG, "password_reused"),
    ):
        refused = _reset(h, form, new, confirm)
        assert _template(refused) == "recover/new_password.html"
        assert _ids(refused) == [problem]
    assert [r.reason for r in h.events("PasswordChangeFailed")] == [
        "password_too_short",
        "password_banned",
        "password_mismatch",
        "password_reused",
    ]
    assert "PasswordReset" not in h.audit_types()
    assert _signed_in(other)

    done = _reset(h, form)
    assert done.status_code == 200
    assert _template(done) == "recover/done.html"
    assert _ids(done) == ["password_reset"]

    # Every session ended, the lock went with the old password, the new password works.
    assert other.client.get("/apps").url.path == "/login"
    assert _throttle(h, "cs0101@alacop.gov") is None
    old = h.sign_in("cs0101", STRONG)
    assert old.url.path != "/apps"
    assert _ids(old) == ["credentials_invalid"]
    assert h.sign_in("cs0101", NEW_PASSWORD).url.path == "/apps"

    types = h.audit_types()
    order = [types.index(t) for t in ("RecoveryStarted", "RecoveryVerified", "PasswordReset")]
    assert order == sorted(order)
    [reset] = h.events("PasswordReset")
    assert reset.reason == "self_service_recovery"
    assert reset.subject_id == user.id
    assert audit_details(reset)["sessions_ended"] >= 1
    assert audit_details(reset)["methods_verified"] == [method]

    resets = [m for m in _mail(h) if "password was reset" in str(m["Subject"])]
    assert len(resets) == 1
    assert resets[0]["To"] == "cs0101@test.al.gov"
    body = resets[0].get_content()
    assert "was reset" in body
    assert "cs0101@alacop.gov" in body
    assert NEW_PASSWORD not in body and STRONG not in body


def test_finished_flow_cannot_reset_again(h: Harness) -> None:
    h.create_user()
    form = _post(h, "/recover/choose", _to_choose(h), action="reset")
    done = _reset(h, form)
    assert _template(done) == "recover/done.html"
    again = _reset(h, form, "another fresh passphrase 3")
    assert again.status_code == 400
    unlock = _post(h, "/recover/unlock", form, password=NEW_PASSWORD)
    assert unlock.status_code == 400
    assert _post(h, "/recover/choose", form, action="reset").status_code == 400
    assert len(h.events("PasswordReset")) == 1
    assert h.sign_in("cs0101", "another fresh passphrase 3").url.path != "/apps"
    assert h.sign_in("cs0101", NEW_PASSWORD).url.path == "/apps"
    # Reloading the finished flow shows the done page, not a form.
    assert _template(h.client.get(f"/recover?flow={_flow(done).id}")) == "recover/done.html"


def test_recovery_code_verification_spends_the_code(h: Harness) -> None:
    user = h.create_user()
    code = h.recovery_codes[3]
    page = _code(h, _method(h, _to_verify(h), "recovery_code"), code)
    assert _template(page) == "recover/choose.html"
    assert _unused_codes(h, user) == 9
    [used] = h.events("RecoveryCodeUsed")
    assert used.reason == "recovery"
    assert any("recovery code was used" in s for s in _subjects(h))

    # The spent code neither recovers again nor signs in.
    again = _code(h, _method(h, _to_verify(h), "recovery_code"), code)
    assert _ids(again) == GENERIC
    second = h.password(h.identifier("cs0101"), STRONG)
    assert _template(second) == "login/second_factor.html"
    chosen = _post(h, "/login/method", second, kind="recovery_code")
    refused = _post(h, "/login/second-factor", chosen, code=code, credential="")
    assert refused.url.path != "/apps"
    assert _template(refused) == "login/second_factor.html"
    assert not _signed_in(h)
    assert _unused_codes(h, user) == 9


# -- 4. unlock ---------------------------------------------------------------------------------------------
def test_unlock_with_known_password(h: Harness) -> None:
    user = h.create_user()
    _lock_sign_in(h)
    assert _ids(h.sign_in()) == ["account_locked"]

    unlock = _post(h, "/recover/choose", _to_choose(h), action="unlock")
    assert _template(unlock) == "recover/unlock.html"
    wrong = _post(h, "/recover/unlock", unlock, password="not my password at all")
    assert _template(wrong) == "recover/unlock.html"
    assert _ids(wrong) == ["current_password_wrong"]
    assert "AccountUnlocked" not in h.audit_types()
    assert _ids(h.sign_in()) == ["account_locked"]
    [failed] = h.events("RecoveryVerificationFailed")
    assert (failed.reason, audit_details(failed)["kind"]) == ("current_password_wrong", "password")

    done = _post(h, "/recover/unlock", wrong, password=STRONG)
    assert _template(done) == "recover/done.html"
    assert _ids(done) == ["account_unlocked"]
    [unlocked] = h.events("AccountUnlocked")
    assert unlocked.reason == "self_service_recovery"
    assert unlocked.subject_id == user.id
    assert audit_details(unlocked)["before"] == {"locked": True}
    assert audit_details(unlocked)["after"] == {"locked": False}
    assert "PasswordReset" not in h.audit_types()
    assert _throttle(h, "recover:cs0101@alacop.gov") is None
    assert h.sign_in().url.path == "/apps"
    assert any("was unlocked" in s for s in _subjects(h))


def test_wrong_passwords_at_unlock_count_toward_the_recovery_limit(h: Harness) -> None:
    h.create_user()
    page = _post(h, "/recover/choose", _to_choose(h), action="unlock")
    for attempt in range(1, 5):
        page = _post(h, "/recover/unlock", page, password=f"wrong guess {attempt}")
        assert _ids(page) == ["current_password_wrong"], attempt
    page = _post(h, "/recover/unlock", page, password="wrong guess 5")
    assert _ids(page) == LOCKED
    assert _template(page) == "recover/unlock.html"
    assert len(h.events("RecoveryLocked")) == 1
    # A new recovery attempt meets the lock at verify.
    assert _ids(_totp(h, _to_verify(h))) == LOCKED


def test_locked_recovery_refuses_even_the_right_password_at_unlock(h: Harness) -> None:
    h.create_user()
    _lock_sign_in(h)
    page = _post(h, "/recover/choose", _to_choose(h), action="unlock")
    for attempt in range(5):
        page = _post(h, "/recover/unlock", page, password=f"wrong guess {attempt}")
    assert _ids(page) == LOCKED
    after = _post(h, "/recover/unlock", page, password=STRONG)
    assert _ids(after) == LOCKED
    assert "AccountUnlocked" not in h.audit_types()


# -- 5. coordinators and administrators -----------------------------------------------------------------
@pytest.mark.parametrize("role", [Role.COORDINATOR, Role.ADMIN])
def test_privileged_accounts_verify_two_methods_of_different_kinds(h: Harness, role: Role) -> None:
    h.create_user(role=role)
    key = SoftwareAuthenticator()
    _add_key(h, key)

    first = _totp(h, _to_verify(h))
    assert _template(first) == "recover/verify.html"
    assert _ids(first) == ["recovery_second_method"]
    assert [kind for kind, _ in first.context["choices"]] == ["webauthn", "recovery_code"]
    assert _flow(first).verified == ("totp",)
    # The same kind again is not offered, and a new-password step is still out of turn.
    assert _post(h, "/recover/method", first, kind="totp").status_code == 400
    assert _post(h, "/recover/choose", first, action="reset").status_code == 400
    assert _reset(h, first).status_code == 400

    second = _key_answer(h, first, key)
    assert _template(second) == "recover/choose.html", second.context.get("message_ids")
    verified = h.events("RecoveryVerified")
    assert [r.reason for r in verified] == ["totp", "webauthn"]
    assert audit_details(verified[-1])["needed"] == 2
    done = _reset(h, _post(h, "/recover/choose", second, action="reset"))
    assert _ids(done) == ["password_reset"]


def test_privileged_account_cannot_count_one_method_twice(h: Harness) -> None:
    h.create_user(role=Role.COORDINATOR)
    key = SoftwareAuthenticator()
    _add_key(h, key)
    first = _totp(h, _to_verify(h))
    assert _ids(first) == ["recovery_second_method"]
    # A second TOTP code posted straight to verify is not accepted as the second method.
    h.clock.advance(timedelta(seconds=30))
    page = _code(h, first, h.totp_code())
    assert _template(page) == "recover/verify.html"
    assert _ids(page) == GENERIC
    assert _flow(page).verified == ("totp",)
    assert _post(h, "/recover/choose", page, action="reset").status_code == 400
    assert [r.reason for r in h.events("RecoveryVerified")] == ["totp"]


def test_second_method_page_offers_a_usable_key_prompt(h: Harness) -> None:
    h.create_user(role=Role.COORDINATOR)
    _add_key(h, SoftwareAuthenticator())
    first = _totp(h, _to_verify(h))
    assert _ids(first) == ["recovery_second_method"]
    prompt_ready = "webauthn_options" in first.context
    key_offered = 'name="kind" value="webauthn"' in first.text
    assert prompt_ready or key_offered
    assert 'data-options=""' not in first.text


# -- 6. the same for every account ------------------------------------------------------------------------
def _normalised(page: Any, identifier: str) -> str:
    """The page as sent, less what is meant to differ: ids, tokens, the nonce, the key options, the name typed."""
    flow = _flow(page)
    text = page.text.replace(flow.id, "FLOW").replace(flow.csrf_token, "CSRF")
    text = text.replace(f'<p class="identity">{identifier}</p>', '<p class="identity">IDENT</p>')
    if "captcha_nonce" in page.context:
        text = text.replace(page.context["captcha_nonce"], "NONCE")
    return re.sub(r'data-options="[^"]*"', 'data-options="OPTIONS"', text)


def test_every_account_meets_the_same_steps_and_the_same_failure(h: Harness) -> None:
    h.create_user("cs0404", must_change=True)
    temporary_codes = list(h.recovery_codes)
    h.create_user("cs0505")
    disabled_codes = list(h.recovery_codes)
    h.run(Directory(h.portal.deps).set_status, "cs0505", UserStatus.DISABLED, RequestContext.system("test"))
    h.create_user("cs0303", factor=False)
    h.create_user("cs0101")
    stranger = SoftwareAuthenticator()
    stranger_id = _stranger_credential(stranger)
    codes = {"cs0101": "AAAA-BBBB-CC", "nobody77": "AAAA-BBBB-CC", "cs0303": "AAAA-BBBB-CC"}
    codes["cs0404"] = temporary_codes[0]
    codes["cs0505"] = disabled_codes[0]

    traces: dict[str, list[tuple[Any, ...]]] = {}
    key_ids: dict[str, list[str]] = {}
    for name in ("cs0101", "nobody77", "cs0303", "cs0404", "cs0505"):
        trace: list[tuple[Any, ...]] = []
        ident = f"{name}@alacop.gov"

        def step(page: Any, ident: str = ident, trace: list[tuple[Any, ...]] = trace) -> Any:
            trace.append(
                (
                    page.status_code,
                    _template(page),
                    tuple(_ids(page)),
                    tuple(page.context.get("choices", ())),
                    _flow(page).state,
                    _flow(page).method_kind,
                    _normalised(page, ident),
                )
            )
            return page

        step(_start(h))
        page = step(_identify_page(h))
        page = step(_identify(h, name, page))
        h.clock.advance(timedelta(seconds=30))
        # The temporary-password and disabled accounts get their real current code: they still may not recover.
        code = h.totp_code() if name in {"cs0404", "cs0505"} else _wrong_totp(h)
        page = step(_code(h, page, code))
        page = step(_method(h, page, "webauthn"))
        options = _options(page)
        key_ids[name] = [c["id"] for c in options["allowCredentials"]]
        trace.append((sorted(options), options["rpId"], options.get("userVerification"), len(options["challenge"])))
        credential = stranger.get(page.context["webauthn_options"], h.portal.deps.origin, stranger_id)
        page = step(_post(h, "/recover/verify", page, code="", credential=credential))
        page = step(_method(h, page, "recovery_code"))
        page = step(_code(h, page, codes[name]))
        traces[name] = trace

    reference = traces["cs0101"]
    for name, trace in traces.items():
        assert len(trace) == len(reference)
        for i, (mine, theirs) in enumerate(zip(trace, reference, strict=True)):
            assert mine == theirs, (name, i)
    failures = [t for t in reference if len(t) == 7 and t[2]]
    assert [t[2] for t in failures] == [tuple(GENERIC)] * 3
    assert len(h.events("RecoveryVerificationFailed")) == 15
    assert "RecoveryVerified" not in h.audit_types()

    # One stand-in credential each, shaped alike, distinct per account name.
    assert all(len(ids) == 1 for ids in key_ids.values())
    lengths = {len(ids[0]) for ids in key_ids.values()}
    assert len(lengths) == 1
    assert len({ids[0] for ids in key_ids.values()}) == 5


def test_stand_in_key_id_is_stable_per_identifier(h: Harness) -> None:
    h.create_user("cs0303", factor=False)
    seen: dict[str, list[str]] = {"nobody77": [], "cs0303": []}
    for _ in range(2):
        for name in seen:
            page = _method(h, _to_verify(h, name), "webauthn")
            [allowed] = _options(page)["allowCredentials"]
            seen[name].append(allowed["id"])
            assert set(allowed) <= {"id", "type"}
    assert seen["nobody77"][0] == seen["nobody77"][1]
    assert seen["cs0303"][0] == seen["cs0303"][1]
    assert seen["nobody77"][0] != seen["cs0303"][0]
    assert len(seen["nobody77"][0]) == len(seen["cs0303"][0])


def test_real_key_is_listed_by_its_credential_id(h: Harness) -> None:
    h.create_user()
    key = SoftwareAuthenticator()
    _add_key(h, key)
    page = _method(h, _to_verify(h), "webauthn")
    options = _options(page)
    assert [c["id"] for c in options["allowCredentials"]] == [key.credential().id]
    assert "transports" not in options["allowCredentials"][0]
    # A fresh challenge per prompt.
    again = _method(h, _to_verify(h), "webauthn")
    assert _options(again)["challenge"] != options["challenge"]


def test_key_answer_for_another_challenge_or_origin_is_refused(h: Harness) -> None:
    h.create_user()
    key = SoftwareAuthenticator()
    _add_key(h, key)
    page = _method(h, _to_verify(h), "webauthn")
    phished = key.get(page.context["webauthn_options"], "https://alacop.evil.example")
    refused = _post(h, "/recover/verify", page, code="", credential=phished)
    assert _ids(refused) == GENERIC
    # The refused answer's challenge is not reused; the next prompt has a new one.
    assert _options(refused)["challenge"] != _options(page)["challenge"]
    stale = key.get(page.context["webauthn_options"], h.portal.deps.origin)
    again = _post(h, "/recover/verify", refused, code="", credential=stale)
    assert _ids(again) == GENERIC
    assert _template(_key_answer(h, again, key)) == "recover/choose.html"


# -- 7. limits ---------------------------------------------------------------------------------------------
def test_five_failures_lock_recovery_for_real_and_missing_accounts_alike(h: Harness) -> None:
    h.create_user()
    last: dict[str, Any] = {}
    for name in ("cs0101", "nobody77"):
        page = _to_verify(h, name)
        for attempt in range(1, 5):
            page = _code(h, page, _wrong_totp(h))
            assert _ids(page) == GENERIC, (name, attempt)
        page = _code(h, page, _wrong_totp(h))
        assert _ids(page) == LOCKED, name
        last[name] = page
    assert _ids(last["cs0101"]) == _ids(last["nobody77"])
    assert last["cs0101"].status_code == last["nobody77"].status_code == 200
    assert len(h.events("RecoveryLocked")) == 2

    # Locked: even the right code, in this flow or a new one, and even a recovery code.
    assert _ids(_totp(h, last["cs0101"])) == LOCKED
    assert _ids(_totp(h, _to_verify(h))) == LOCKED
    assert _ids(_code(h, _method(h, _to_verify(h), "recovery_code"), h.recovery_codes[0])) == LOCKED
    assert "RecoveryVerified" not in h.audit_types()
    assert _ids(_totp(h, _to_verify(h, "nobody77"))) == LOCKED

    # The recovery counter is not the sign-in lock.
    assert _throttle(h, "cs0101@alacop.gov") is None
    assert h.sign_in().url.path == "/apps"
    h.forget_session()

    # `alacop users unlock` releases it.
    h.run(Directory(h.portal.deps).unlock, "cs0101", RequestContext.system("test"))
    assert _throttle(h, "recover:cs0101@alacop.gov") is None
    assert _template(_totp(h, _to_verify(h))) == "recover/choose.html"


def test_failures_spread_beyond_fifteen_minutes_do_not_lock(h: Harness) -> None:
    h.create_user()
    page = _to_verify(h)
    for _ in range(4):
        page = _code(h, page, _wrong_totp(h))
    h.clock.advance(timedelta(minutes=16))
    page = _code(h, _to_verify(h), _wrong_totp(h))
    assert _ids(page) == GENERIC
    assert _template(_totp(h, page)) == "recover/choose.html"


def test_reset_clears_the_recovery_counter(h: Harness) -> None:
    h.create_user()
    page = _to_verify(h)
    for _ in range(3):
        page = _code(h, page, _wrong_totp(h))
    assert _throttle(h, "recover:cs0101@alacop.gov") is not None
    chosen = _totp(h, page)
    done = _reset(h, _post(h, "/recover/choose", chosen, action="reset"))
    assert _ids(done) == ["password_reset"]
    assert _throttle(h, "recover:cs0101@alacop.gov") is None


# -- 8. flow integrity -------------------------------------------------------------------------------------
def test_expired_flow_starts_again_with_a_message(h: Harness) -> None:
    h.create_user()
    page = _to_verify(h)
    old = _flow(page)
    h.clock.advance(timedelta(minutes=16))
    again = h.client.get(f"/recover?flow={old.id}")
    assert again.status_code == 200
    assert _template(again) == "recover/account_type.html"
    assert _ids(again) == ["flow_expired"]
    assert "This took too long" in again.text
    assert _flow(again).id != old.id
    assert "FlowExpired" in h.audit_types()
    # Posting to it does the same and verifies nothing.
    h.clock.advance(timedelta(seconds=30))
    posted = h.client.post(
        f"/recover/verify?flow={old.id}", data={"csrf_token": old.csrf_token, "code": h.totp_code(), "credential": ""}
    )
    assert _template(posted) == "recover/account_type.html"
    assert _ids(posted) == ["flow_expired"]
    assert "RecoveryVerified" not in h.audit_types()


def test_another_browser_cannot_use_the_flow(h: Harness, app_factory: App) -> None:
    h.create_user()
    page = _to_verify(h)
    flow = _flow(page)
    other = _app(app_factory, clock=h.clock)
    other.totp_secret = h.totp_secret
    seen = other.client.get(f"/recover?flow={flow.id}")
    assert _template(seen) == "recover/account_type.html"
    assert _flow(seen).id != flow.id
    assert "cs0101@alacop.gov" not in seen.text
    h.clock.advance(timedelta(seconds=30))
    stolen = other.client.post(
        f"/recover/verify?flow={flow.id}",
        data={"csrf_token": flow.csrf_token, "code": other.totp_code(), "credential": ""},
    )
    assert _template(stolen) == "recover/account_type.html"
    assert _ids(stolen) == ["flow_expired"]
    assert "RecoveryVerified" not in h.audit_types()
    # The owner's flow is untouched and still works.
    assert _template(_totp(h, page)) == "recover/choose.html"


def test_wrong_csrf_is_forbidden(h: Harness) -> None:
    h.create_user()
    page = _to_verify(h)
    flow = _flow(page)
    h.clock.advance(timedelta(seconds=30))
    for token in ("", "not-the-token"):
        response = h.client.post(
            f"/recover/verify?flow={flow.id}", data={"csrf_token": token, "code": h.totp_code(), "credential": ""}
        )
        assert response.status_code == 403
    start = _start(h)
    assert (
        h.client.post(f"/recover/type?flow={_flow(start).id}", data={"csrf_token": "x", "type": "work"}).status_code
        == 403
    )
    assert "RecoveryVerified" not in h.audit_types()
    assert _flow(h.client.get(f"/recover?flow={flow.id}")).state == "verify"


def test_steps_out_of_turn_are_refused_and_change_nothing(h: Harness) -> None:
    h.create_user()
    start = _start(h)
    assert (
        _post(h, "/recover/password", start, new_password=NEW_PASSWORD, confirm_password=NEW_PASSWORD).status_code
        == 400
    )
    page = _to_verify(h)
    for path, data in (
        ("/recover/password", {"new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}),
        ("/recover/unlock", {"password": STRONG}),
        ("/recover/choose", {"action": "reset"}),
        ("/recover/identify", {"identifier": "cs0101", "captcha": "AAAAAA"}),
        ("/recover/captcha/new", {}),
        ("/recover/type", {"type": "work"}),
    ):
        response = _post(h, path, page, **data)
        assert 400 <= response.status_code < 500, path
    assert _post(h, "/recover/method", page, kind="password").status_code == 400
    assert _post(h, "/recover/verify", start, code="123456", credential="").status_code == 400
    assert _flow(h.client.get(f"/recover?flow={_flow(page).id}")).state == "verify"
    assert "PasswordReset" not in h.audit_types()
    assert h.sign_in("cs0101", NEW_PASSWORD).url.path != "/apps"
    assert h.sign_in().url.path == "/apps"


def test_bursts_from_one_address_are_slowed(app_factory: App) -> None:
    h = _app(app_factory, ALACOP_POLICY__RATE_LIMIT_PER_MINUTE=3)
    page = _start(h)
    statuses = [_post(h, "/recover/type", page, type="back").status_code for _ in range(5)]
    assert statuses[:3] == [400, 400, 400]
    assert statuses[3:] == [429, 429]
    # Another address is not affected.
    other = _app(app_factory, clock=h.clock, peer=("10.0.0.9", 50000), ALACOP_POLICY__RATE_LIMIT_PER_MINUTE=3)
    assert _template(_post(other, "/recover/type", _start(other), type="work")) == "recover/identify.html"
