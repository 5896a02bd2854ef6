"""Two agencies, their people and their requests, for the console's core and web tests.

Agency A (AL0010000) has an administrator, two coordinators and a user; agency B (AL0020000) a user.
Each agency has a pending registration request and an approved account still awaiting activation.
Coordinators and administrators get a second kind of method (a security key row), as the privileged
policy asks, so they can sign in with the harness's authenticator-app code.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from alacop.core.accounts import Agency, Role, User
from alacop.core.approvals import Approvals
from alacop.core.audit import AuditChain
from alacop.core.authz import Actor
from alacop.core.console import Console
from alacop.core.context import RequestContext
from alacop.core.credentials import AuthMethod, MethodKind
from alacop.core.registration import Application, Registration
from tests.conftest import Harness

CTX = RequestContext.system("test")
ORI_A = "AL0010000"
ORI_B = "AL0020000"


@dataclass
class World:
    h: Harness
    a: Agency
    b: Agency
    admin: User
    coord: User
    coord2: User
    alice: User
    bob: User
    reg_a: Registration
    reg_b: Registration
    waiting_a: User
    waiting_b: User

    @property
    def console(self) -> Console:
        p = self.h.portal
        return Console(p.deps, p.directory, p.approvals, AuditChain(p.settings.audit_key))

    def actor(self, user: User, *, fresh: bool = True) -> Actor:
        agencies = frozenset({self.a.id}) if user.role is Role.COORDINATOR else frozenset()
        return Actor(id=user.id, role=user.role, agency_ids=agencies, fresh=fresh, name=user.username)

    def user(self, user_id: str) -> User:
        async def go() -> User | None:
            async with self.h.portal.deps.store.read() as db:
                return await db.users.get(user_id)

        found = self.h.run(go)
        assert found is not None
        return found

    def seq(self) -> int:
        return len(self.h.audit())

    def since(self, seq: int) -> list[Any]:
        return self.h.audit()[seq:]


def add_key(h: Harness, user: User) -> None:
    """A security-key row, older than the authenticator app, so sign-in still offers the app first."""

    async def go() -> None:
        async with h.portal.deps.store.transaction() as tx:
            await tx.methods.add(
                AuthMethod(
                    id=str(uuid.uuid4()),
                    user_id=user.id,
                    kind=MethodKind.WEBAUTHN,
                    name="Desk key",
                    created_at=h.clock.now() - timedelta(days=1),
                    credential_id=f"cred-{user.id}",
                    public_key="unused",
                )
            )

    h.run(go)


def application(agency: Agency, first: str, last: str, today: Any) -> Application:
    return Application(
        first_name=first,
        last_name=last,
        agency_id=agency.id,
        title="Dispatcher",
        email=f"{first}.{last}@test.al.gov".lower(),
        phone="(334) 555-0100",
        supervisor="Sgt. Dana Lee",
        reason="Records checks for dispatch.",
        training_date=today - timedelta(days=30),
        rules_sha256=hashlib.sha256(b"rules").hexdigest(),
    )


def build_world(h: Harness) -> World:
    admin = h.create_user("admin01", role=Role.ADMIN, ori=ORI_A)
    coord = h.create_user("coord01", role=Role.COORDINATOR, ori=ORI_A)
    coord2 = h.create_user("coord02", role=Role.COORDINATOR, ori=ORI_A)
    alice = h.create_user("alice01", ori=ORI_A)
    bob = h.create_user("bob01", ori=ORI_B)
    for privileged in (admin, coord, coord2):
        add_key(h, privileged)
    deps = h.portal.deps
    approvals = Approvals(deps)
    today = h.clock.now().date()

    async def go() -> tuple[Agency, Agency, list[Registration], list[User]]:
        async with deps.store.transaction() as tx:
            a = await tx.agencies.by_ori(ORI_A)
            b = await tx.agencies.by_ori(ORI_B)
            assert a is not None and b is not None
            await tx.agencies.set_coordinators(a.id, [coord.id, coord2.id])
        pending = []
        for agency, (first, last) in ((a, ("Pat", "Pending")), (b, ("Pam", "Pending"))):
            submitted = await approvals.submit(application(agency, first, last, today), CTX)
            assert submitted is not None
            pending.append(submitted[0])
        waiting = []
        for agency, (first, last) in ((a, ("Wade", "Waiting")), (b, ("Wes", "Waiting"))):
            submitted = await approvals.submit(application(agency, first, last, today), CTX)
            assert submitted is not None
            waiting.append(await approvals.approve(Actor.operator(), submitted[0].id, CTX))
        return a, b, pending, waiting

    a, b, pending, waiting = h.run(go)
    return World(h, a, b, admin, coord, coord2, alice, bob, pending[0], pending[1], waiting[0], waiting[1])


def tamper(w: World, *statements: str) -> None:
    """What an intruder with database access does: drop the append-only guard, then edit records."""
    from tests.test_cli import tamper as tamper_url

    tamper_url(w.h.portal.settings.database_url, *statements)
