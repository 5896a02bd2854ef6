"""New User Registration through the app: form, CAPTCHA, email code, approval, activation, first sign-in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pyotp
import pytest

from alacop.core.accounts import Role
from alacop.core.captcha import answer_for
from tests.conftest import Harness, audit_details
from tests.support.mail import Inbox, RecordingMailer, find, smtp_server
from tests.support.registration import CTX, NEW_PASSWORD, SEED, Registering, create_account, registering


@pytest.fixture
def r(app_factory: Callable[..., Harness]) -> Registering:
    return registering(app_factory)


def _ids(page: Any) -> list[str]:
    return list(page.context["message_ids"])


# -- the whole path ---------------------------------------------------------------------------------
def test_register_verify_approve_activate_enrol_and_reach_apps(r: Registering) -> None:
    done = r.register()
    assert "request_sent" in _ids(done)
    status_link = done.context["status_token"]
    assert status_link and f"/register/status?t={status_link}" in done.text
    (request,) = r.pending()
    assert request.application.full_name == "Casey Smith"
    assert request.application.training_date == r.h.clock.now().date() - timedelta(days=30)
    received = r.mail.last("casey.smith@mpd.example.gov")
    assert "was sent to Montgomery Police Department" in received.body
    assert f"/register/status?t={status_link}" in received.body

    status = r.h.client.get(f"/register/status?t={status_link}")
    assert status.status_code == 200 and 'data-status="pending"' in status.text

    user = r.approve(request.id)
    assert user.username == "cs0101"
    assert user.awaiting_activation and user.role is Role.USER
    approved = r.mail.last("casey.smith@mpd.example.gov")
    assert "Your username is cs0101" in approved.body
    token = find(r"/activate\?token=([A-Za-z0-9_-]+)", approved.body)
    assert 'data-status="approved"' in r.h.client.get(f"/register/status?t={status_link}").text

    # Before activation the account cannot sign in: it has no password.
    page = r.h.sign_in("cs0101", NEW_PASSWORD)
    assert page.template.name == "login/password.html"

    activate = r.h.client.get(f"/activate?token={token}")
    assert activate.status_code == 200 and "cs0101" in activate.text
    csrf = activate.context["csrf_token"]
    enrol = r.h.client.post(
        f"/activate?token={token}",
        data={"csrf_token": csrf, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD},
    )
    assert enrol.template.name == "login/enroll.html"
    flow = enrol.context["flow"]
    chosen = r.h.client.post(
        f"/login/enroll/choose?flow={flow.id}", data={"csrf_token": flow.csrf_token, "kind": "totp"}
    )
    secret = chosen.context["totp_secret"].replace(" ", "")
    codes = r.h.client.post(
        f"/login/enroll?flow={flow.id}",
        data={
            "csrf_token": flow.csrf_token,
            "code": pyotp.TOTP(secret).at(r.h.clock.now()),
            "name": "My phone",
            "credential": "",
        },
    )
    assert codes.template.name == "login/recovery_codes.html"
    apps = r.h.client.post(f"/login/recovery-codes?flow={flow.id}", data={"csrf_token": flow.csrf_token})
    assert apps.status_code == 200 and apps.template.name == "apps.html"
    activated = r.h.user("cs0101")
    assert activated is not None and not activated.awaiting_activation and not activated.must_change_password
    types = r.h.audit_types()
    for kind in (
        "RegistrationCodeSent",
        "RegistrationSubmitted",
        "RegistrationApproved",
        "AccountCreated",
        "ActivationLinkIssued",
        "AccountActivated",
        "LoginSucceeded",
    ):
        assert kind in types
    # The link worked once.
    again = r.h.client.get(f"/activate?token={token}")
    assert again.status_code == 410 and "ActivationFailed" in r.h.audit_types()


# -- the form's checks --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"email": "casey.smith@gmail.com"}, "email"),
        ({"email": "casey.smith@evil-mpd.example.gov"}, "email"),
        ({"email": "not an email"}, "email"),
        ({"training_date": "2099-01-01"}, "training_date"),
        ({"training_date": "2000-01-01"}, "training_date"),
        ({"training_date": "yesterday"}, "training_date"),
        ({"agency": "Nowhere Police"}, "agency"),
        ({"accept_rules": ""}, "accept_rules"),
        ({"first_name": ""}, "first_name"),
        ({"first_name": "<script>"}, "first_name"),
        ({"phone": "call me"}, "phone"),
        ({"reason": "x" * 1001}, "reason"),
        ({"email": "casey\x00smith@mpd.example.gov"}, "email"),
        ({"reason": "patrol\x00"}, "reason"),
        ({"title": "Clerk\x1b"}, "title"),
    ],
)
def test_refused_fields_keep_the_rest_of_the_form_and_send_nothing(
    r: Registering, changes: dict[str, str], field: str
) -> None:
    page = r.submit(**changes)
    assert page.template.name == "register/form.html"
    assert "fields_refused" in _ids(page)
    assert set(page.context["problems"]) == {field}
    assert 'aria-invalid="true"' in page.text
    # What was typed is kept, so one wrong field costs nothing else.
    assert page.context["draft"]["supervisor"] == "Sgt. Dana Lee"
    assert 'value="Sgt. Dana Lee"' in page.text
    assert r.mail.sent == []
    assert r.pending() == []
    (refused,) = r.h.events("RegistrationRefused")
    assert audit_details(refused)["fields"] == [field]


def test_training_exactly_a_year_old_is_refused_and_a_day_less_accepted(r: Registering) -> None:
    today = r.h.clock.now().date()
    old = r.submit(training_date=(today - timedelta(days=365)).isoformat())
    assert set(old.context["problems"]) == {"training_date"}
    fresh = r.submit(training_date=(today - timedelta(days=364)).isoformat())
    assert fresh.template.name == "register/verify.html"
    today_ok = r.submit(training_date=today.isoformat(), email="b.jones@mpd.example.gov")
    assert today_ok.template.name == "register/verify.html"


def test_agency_is_found_by_ori_or_name(r: Registering) -> None:
    by_ori = r.submit(agency="al0030100")
    assert by_ori.template.name == "register/verify.html"
    by_name = r.submit(agency="montgomery police department", email="b.jones@mpd.example.gov")
    assert by_name.template.name == "register/verify.html"


def test_wrong_captcha_keeps_the_form_and_gives_a_new_challenge(r: Registering) -> None:
    page = r.start()
    refused = r.submit(page, answer="WRONG1")
    assert refused.template.name == "register/form.html"
    assert "captcha_wrong" in _ids(refused)
    assert refused.context["captcha_nonce"] != page.context["captcha_nonce"]
    assert refused.context["draft"]["email"] == "casey.smith@mpd.example.gov"
    assert r.mail.sent == [] and "CaptchaFailed" in r.h.audit_types()
    # The spent challenge's answer does not work a second time.
    again = r.post(
        "/register/submit", refused, captcha=answer_for(SEED.encode(), page.context["captcha_nonce"]), **r.form()
    )
    assert "captcha_wrong" in _ids(again)


def test_captcha_media_only_for_this_browser_and_challenge(r: Registering) -> None:
    page = r.start()
    flow, nonce = page.context["flow"], page.context["captcha_nonce"]
    picture = r.h.client.get(f"/register/captcha.png?flow={flow.id}&c={nonce}")
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    audio = r.h.client.get(f"/register/captcha.wav?flow={flow.id}&c={nonce}")
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    assert r.h.client.get(f"/register/captcha.png?flow={flow.id}&c=other").status_code == 404
    assert r.h.client.get(f"/register/captcha.png?flow=nope&c={nonce}").status_code == 404


def test_submit_without_csrf_changes_nothing(r: Registering) -> None:
    page = r.start()
    flow = page.context["flow"]
    answer = answer_for(SEED.encode(), page.context["captcha_nonce"])
    refused = r.h.client.post(f"/register/submit?flow={flow.id}", data={"captcha": answer, **r.form()})
    assert refused.status_code == 403
    assert r.mail.sent == [] and r.pending() == []


# -- the email code -----------------------------------------------------------------------------------
def test_code_wrong_five_times_then_a_new_code_then_back_to_the_form(r: Registering) -> None:
    verify = r.submit()
    sent = r.code()
    for _ in range(4):
        verify = r.post("/register/verify", verify, code="AAAAAAAA")
        assert "code_wrong" in _ids(verify)
    verify = r.post("/register/verify", verify, code="AAAAAAAA")
    assert "code_tries_used" in _ids(verify)
    # Tries are spent: even the right code no longer works.
    verify = r.post("/register/verify", verify, code=sent)
    assert "code_tries_used" in _ids(verify) and r.pending() == []
    assert len(r.h.events("RegistrationCodeFailed")) == 5
    for _ in range(3):
        verify = r.post("/register/resend", verify)
        assert "code_sent" in _ids(verify)
    assert len(r.mail.sent) == 4
    # No more new codes: the next request goes back through the form and its CAPTCHA.
    back = r.post("/register/resend", verify)
    assert back.template.name == "register/form.html" and "code_tries_exhausted" in _ids(back)
    assert back.context["draft"]["email"] == "casey.smith@mpd.example.gov"


def test_a_new_code_replaces_the_old_one(r: Registering) -> None:
    verify = r.submit()
    old = r.code()
    verify = r.post("/register/resend", verify)
    new = r.code()
    assert new != old
    refused = r.post("/register/verify", verify, code=old)
    assert "code_wrong" in _ids(refused)
    done = r.post("/register/verify", refused, code=new.lower())
    assert done.template.name == "register/submitted.html"


def test_expired_code_is_refused_and_a_new_one_works(r: Registering) -> None:
    verify = r.submit()
    code = r.code()
    r.h.clock.advance(timedelta(minutes=15))
    expired = r.post("/register/verify", verify, code=code)
    assert "code_expired" in _ids(expired) and r.pending() == []
    assert audit_details(r.h.events("RegistrationCodeFailed")[-1])["flow"] == "registration"
    fresh = r.post("/register/resend", expired)
    done = r.post("/register/verify", fresh, code=r.code())
    assert done.template.name == "register/submitted.html"


def test_a_long_abandoned_registration_starts_again(r: Registering) -> None:
    verify = r.submit()
    r.h.clock.advance(timedelta(minutes=61))
    restarted = r.post("/register/verify", verify, code=r.code())
    assert restarted.template.name == "register/form.html"
    assert "flow_expired" in _ids(restarted) and r.pending() == []
    assert "FlowExpired" in r.h.audit_types()


def test_change_my_details_goes_back_with_the_form_filled_in(r: Registering) -> None:
    verify = r.submit()
    back = r.post("/register/edit", verify)
    assert back.template.name == "register/form.html"
    assert back.context["draft"]["email"] == "casey.smith@mpd.example.gov"
    # The old code is gone with the step.
    assert back.context["flow"].code_hash is None


def test_the_code_never_reaches_the_audit_trail(r: Registering) -> None:
    r.register()
    code = find(r"registration is: ([A-Z0-9]{8})", r.mail.sent[0].body)
    for record in r.h.audit():
        assert code not in record.details


# -- duplicates ---------------------------------------------------------------------------------------
def _shape(page: Any) -> tuple[Any, ...]:
    flow = page.context["flow"]
    text = page.text.replace(flow.id, "FLOW").replace(flow.csrf_token, "CSRF")
    return page.status_code, page.template.name, tuple(_ids(page)), text


@pytest.mark.parametrize("existing", ["account", "pending"])
def test_a_known_email_takes_the_same_path_and_its_owner_is_told(r: Registering, existing: str) -> None:
    fresh = r.submit(email="new.person@mpd.example.gov", first_name="Nova")
    if existing == "account":
        r.h.run(create_account, r.h, "cs0101", "Casey.Smith@MPD.example.gov")
    else:
        r.register()
    sent_before = len(r.mail.sent)
    duplicate = r.submit()
    assert _shape(duplicate)[:3] == _shape(fresh)[:3]
    assert _shape(duplicate)[3].replace("casey.smith", "X").replace("Casey", "N") == _shape(fresh)[3].replace(
        "new.person", "X"
    ).replace("Nova", "N")
    (notice,) = r.mail.sent[sent_before:]
    assert notice.to == "casey.smith@mpd.example.gov"
    assert "already has an account" in notice.body
    assert "registration is:" not in notice.body
    # No code can finish it, and nothing new reaches the queue.
    pending = len(r.pending())
    for guess in ("AAAAAAAA", "23456789"):
        duplicate = r.post("/register/verify", duplicate, code=guess)
        assert "code_wrong" in _ids(duplicate)
    assert len(r.pending()) == pending
    assert audit_details(r.h.events("RegistrationRefused")[-1])["flow"] == "registration"


# -- real mail ----------------------------------------------------------------------------------------
@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    yield from smtp_server()


def test_codes_and_decisions_reach_a_real_smtp_server(
    app_factory: Callable[..., Harness], smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    h = app_factory(
        ALACOP_ENV="test",
        ALACOP_CAPTCHA_SEED=SEED,
        ALACOP_SMTP_HOST="127.0.0.1",
        ALACOP_SMTP_PORT=port,
        ALACOP_SMTP_STARTTLS="false",
    )
    r = Registering(h, RecordingMailer())
    verify = r.submit()
    (code_mail,) = inbox.messages()
    assert code_mail["To"] == "casey.smith@mpd.example.gov"
    assert code_mail["Subject"] == "AlaCOP: Confirm your email address"
    code = find(r"registration is: ([A-Z0-9]{8})", code_mail.get_content())
    r.post("/register/verify", verify, code=code)
    (request,) = r.pending()
    r.approve(request.id)
    subjects = [m["Subject"] for m in inbox.messages()]
    assert subjects == [
        "AlaCOP: Confirm your email address",
        "AlaCOP: Your registration request was received",
        "AlaCOP: Your account is approved: activate it",
    ]
    approved = inbox.messages()[-1].get_content()
    assert "cs0101" in approved and "/activate?token=" in approved
    assert all(e.rcpt_tos == ["casey.smith@mpd.example.gov"] for e in inbox.envelopes)


def test_a_mail_outage_is_audited_and_loses_nothing(r: Registering) -> None:
    r.mail.fail = True
    verify = r.submit()
    assert verify.template.name == "register/verify.html"
    assert audit_details(r.h.events("NotificationFailed")[-1])["error"] == "OSError"
    assert audit_details(r.h.events("RegistrationCodeSent")[-1])["delivered"] is False
    r.mail.fail = False
    fresh = r.post("/register/resend", verify)
    done = r.post("/register/verify", fresh, code=r.code())
    assert done.template.name == "register/submitted.html"


# -- found in review ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"first_name": "Casey. URGENT: verify at https://evil.example/login"}, "first_name"),
        ({"last_name": "Smith: call 555-0100"}, "last_name"),
        ({"supervisor": "Lee (https://x.example)"}, "supervisor"),
        ({"title": "Officer https://x.example"}, "title"),
        ({"first_name": "...", "last_name": "Smith"}, "first_name"),
    ],
)
def test_names_hold_no_links_or_phrases_to_echo_in_mail(r: Registering, changes: dict[str, str], field: str) -> None:
    page = r.submit(**changes)
    assert page.template.name == "register/form.html"
    assert set(page.context["problems"]) == {field}
    assert r.mail.sent == []


def test_names_in_any_script_with_apostrophes_and_hyphens_pass(r: Registering) -> None:
    page = r.submit(
        first_name="Zoë-Anne", last_name="O’Brien-Núñez", supervisor="Sgt. D'Angelo", title="Clerk II (Records)"
    )
    assert page.template.name == "register/verify.html", page.context.get("problems")


def test_unconfirmed_addresses_are_greeted_without_a_name(r: Registering) -> None:
    r.submit()
    code_mail = r.mail.last("casey.smith@mpd.example.gov")
    assert code_mail.body.startswith("Hello,\n") and "Casey" not in code_mail.body


def test_parallel_wrong_codes_cannot_exceed_the_tries(r: Registering) -> None:
    import asyncio

    verify = r.submit()
    code = r.code()
    service = r.h.portal.registration
    flow = verify.context["flow"]
    ctx = CTX

    async def guess_many() -> None:
        await asyncio.gather(*(service.verify(flow, "AAAAAAAA", flow.csrf_token, ctx) for _ in range(12)))

    r.h.run(guess_many)
    assert len(r.h.events("RegistrationCodeFailed")) == 5, "only five guesses are ever checked"
    # The right code no longer works for this code: its tries are spent, whatever the flow row says.
    after = r.post("/register/verify", verify, code=code)
    assert "code_tries_used" in _ids(after) and r.pending() == []


def test_two_requests_for_one_email_at_once_queue_one(r: Registering) -> None:
    import asyncio

    from alacop.core.registration import check_application
    from alacop.flows.registration import rules_of_behavior

    application, _ = check_application(
        r.form(agency="x"), agency=r.agency, today=r.h.clock.now().date(), rules_sha256=rules_of_behavior()[1]
    )
    assert application is not None

    async def both() -> list[Any]:
        return list(await asyncio.gather(*(r.h.portal.approvals.submit(application, CTX) for _ in range(4))))

    results = r.h.run(both)
    assert sum(1 for x in results if x is not None) == 1
    assert len(r.pending()) == 1


@pytest.mark.parametrize("path", ["/register", "/login", "/recover", "/register/captcha.png", "/recover/captcha.wav"])
def test_a_malformed_flow_id_is_never_a_server_error(r: Registering, path: str) -> None:
    for flow in ("%00", "x" * 80, "%E2%80%AE", "../../etc"):
        page = r.h.client.get(f"{path}?flow={flow}&c=x")
        assert page.status_code in (200, 404), (path, flow, page.status_code)
    form = r.start()
    bad = r.h.client.post(
        "/register/verify?flow=%00", data={"csrf_token": form.context["flow"].csrf_token, "code": "A"}
    )
    assert bad.status_code in (200, 303, 400, 403), bad.status_code
