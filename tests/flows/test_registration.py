"""New User Registration through the app: form, CAPTCHA, email code, approval, activation, first sign-in."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pyotp
import pytest

from alacop.core.accounts import Role
from alacop.core.authz import Actor
from alacop.core.captcha import answer_for
from alacop.core.context import RequestContext
from alacop.core.directory import Directory
from alacop.core.registration import RegistrationStatus
from tests.conftest import Harness
from tests.support.mail import RecordingMailer, find

SEED = "seed"
NEW_PASSWORD = "a long activation passphrase 7"
App = Callable[..., Harness]
CTX = RequestContext.system("test")


class Registering:
    """A harness with the captcha seed, a recording mailer and an agency that takes registrations."""

    def __init__(self, h: Harness, mail: RecordingMailer) -> None:
        self.h = h
        self.mail = mail
        self.agency = h.run(
            Directory(h.portal.deps).create_agency,
            "AL0030100",
            "Montgomery Police Department",
            ["mpd.example.gov"],
            CTX,
        )

    def form(self, **changes: str) -> dict[str, str]:
        today = self.h.clock.now().date()
        values = {
            "first_name": "Casey",
            "last_name": "Smith",
            "agency": "Montgomery Police Department (AL0030100)",
            "title": "Patrol Officer",
            "email": "casey.smith@mpd.example.gov",
            "phone": "(334) 555-0100",
            "supervisor": "Sgt. Dana Lee",
            "reason": "Warrant and records checks on patrol.",
            "training_date": (today - timedelta(days=30)).isoformat(),
            "accept_rules": "yes",
        }
        values.update(changes)
        return values

    def start(self) -> Any:
        page = self.h.client.get("/register")
        assert page.status_code == 200
        assert page.template.name == "register/form.html"
        return page

    def post(self, path: str, page: Any, **data: str) -> Any:
        flow = page.context["flow"]
        return self.h.client.post(f"{path}?flow={flow.id}", data={"csrf_token": flow.csrf_token, **data})

    def submit(self, page: Any | None = None, answer: str | None = None, **changes: str) -> Any:
        page = page or self.start()
        captcha = answer if answer is not None else answer_for(SEED.encode(), page.context["captcha_nonce"])
        return self.post("/register/submit", page, captcha=captcha, **self.form(**changes))

    def code(self, address: str = "casey.smith@mpd.example.gov") -> str:
        return find(r"registration is: ([A-Z0-9]{8})", self.mail.last(address).body)

    def register(self, **changes: str) -> Any:
        verify = self.submit(**changes)
        assert verify.template.name == "register/verify.html", verify.context.get("problems")
        done = self.post(
            "/register/verify", verify, code=self.code(changes.get("email", "casey.smith@mpd.example.gov"))
        )
        assert done.template.name == "register/submitted.html"
        return done

    def pending(self) -> list[Any]:
        async def go() -> list[Any]:
            async with self.h.portal.deps.store.read() as db:
                return list(await db.registrations.list(status=RegistrationStatus.PENDING))

        return self.h.run(go)

    def admin(self) -> Actor:
        return Actor.operator()

    def approve(self, registration_id: str, actor: Actor | None = None) -> Any:
        return self.h.run(self.h.portal.approvals.approve, actor or self.admin(), registration_id, CTX)


@pytest.fixture
def r(app_factory: App) -> Registering:
    mail = RecordingMailer()
    h = app_factory(ALACOP_ENV="test", ALACOP_CAPTCHA_SEED=SEED, ALACOP_POLICY__RATE_LIMIT_PER_MINUTE=1000, mailer=mail)
    return Registering(h, mail)


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
