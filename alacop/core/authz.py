"""Who may do what in the console: roles, agency scope and recent sign-in, checked in the core.

Hiding a link is not a control. Every console service call takes an Actor and checks it here, so a
coordinator who forges a request for another agency's user meets the same refusal as the page would
show (CJIS AC-3, AC-6).
"""

from __future__ import annotations

from dataclasses import dataclass

from alacop.core.accounts import Role, User
from alacop.core.deps import Deps
from alacop.core.errors import Forbidden, StepUpRequired
from alacop.core.sessions import Session


@dataclass(frozen=True, slots=True)
class Actor:
    """Someone acting in the console or at the command line.

    `id` is None for an operator at the command line, who already holds the server's secrets and
    acts as an administrator.
    """

    id: str | None
    role: Role
    agency_ids: frozenset[str]
    # Signed in or re-authenticated within the policy's window (CJIS IA-11): required for changes.
    fresh: bool
    name: str = "operator"

    @classmethod
    def operator(cls) -> Actor:
        return cls(id=None, role=Role.ADMIN, agency_ids=frozenset(), fresh=True)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def console(self) -> bool:
        return self.role in (Role.ADMIN, Role.COORDINATOR)

    @property
    def scope(self) -> tuple[str, ...] | None:
        """The agencies this actor may see; None means all of them."""
        return None if self.is_admin else tuple(sorted(self.agency_ids))

    def may_see(self, agency_id: str | None) -> bool:
        return self.is_admin or (self.role is Role.COORDINATOR and agency_id in self.agency_ids)

    def require_console(self) -> None:
        if not self.console:
            raise Forbidden("the console is for coordinators and administrators")

    def require_agency(self, agency_id: str | None, *, change: bool) -> None:
        self.require_console()
        if not self.may_see(agency_id):
            raise Forbidden("outside the actor's agencies")
        if change and not self.fresh:
            raise StepUpRequired("re-authenticate to make changes")

    def require_admin(self, *, change: bool) -> None:
        if not self.is_admin:
            raise Forbidden("administrators only")
        if change and not self.fresh:
            raise StepUpRequired("re-authenticate to make changes")

    def require_user(self, target: User, *, change: bool) -> None:
        """May act on this account: in scope, and never on an account that outranks the actor.

        Scope and rank are checked before recency, so a refusal never turns into a re-authentication prompt.
        """
        self.require_agency(target.agency_id, change=False)
        if change and not self.is_admin and target.role is not Role.USER:
            # A coordinator cannot disable or reset another coordinator or an administrator.
            raise Forbidden("coordinators act on user accounts only")
        if change and not self.fresh:
            raise StepUpRequired("re-authenticate to make changes")


async def actor_for(deps: Deps, user: User, session: Session) -> Actor:
    async with deps.store.read() as db:
        agencies = (
            frozenset(await db.agencies.coordinated_by(user.id)) if user.role is Role.COORDINATOR else frozenset()
        )
    return Actor(
        id=user.id,
        role=user.role,
        agency_ids=agencies,
        fresh=session.recent(deps.clock.now(), deps.policy),
        name=user.username,
    )
