"""Driving New User Registration in app tests: the form, the emailed code, approval."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

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


def registering(app_factory: Callable[..., Harness]) -> Registering:
    mail = RecordingMailer()
    h = app_factory(ALACOP_ENV="test", ALACOP_CAPTCHA_SEED=SEED, ALACOP_POLICY__RATE_LIMIT_PER_MINUTE=1000, mailer=mail)
    return Registering(h, mail)


async def create_account(h: Harness, username: str, email: str) -> None:
    await Directory(h.portal.deps).create_user(
        username, agency_ori="AL0030100", email=email, name="Casey Smith", role=Role.USER, password=None, ctx=CTX
    )
