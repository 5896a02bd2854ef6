"""The coordinators' and administrators' console, as a service: every rule here, the web routes stay thin.

Every method takes the `Actor` first and checks it against the target it looked up (CJIS AC-3, AC-6):
coordinators see and act only within their agencies and only on role=user accounts; agencies, roles and
coordinators are for administrators. A change also needs a sign-in or re-authentication within the
policy's window (`StepUpRequired`, CJIS IA-11). Each change commits with an audit event carrying its
`before` and `after` values (CJIS AC-2, AU-2, AU-3), and each refusal (`Forbidden`) is audited as
`ConsoleRefused` with the action and the target before it reaches the caller.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, time, timedelta

from alacop.core.accounts import Agency, Role, User, UserStatus, validate_domain, validate_ori, validate_username
from alacop.core.approvals import Approvals
from alacop.core.audit import AuditChain, AuditEvent, AuditRecord, EventType, Outcome, VerifyResult, verify_chain
from alacop.core.authz import Actor
from alacop.core.context import RequestContext
from alacop.core.credentials import ENROLLABLE, MethodKind
from alacop.core.deps import Deps
from alacop.core.directory import Directory
from alacop.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from alacop.core.ports import AuditQuery, Transaction, UserQuery
from alacop.core.registration import TRAINING_VALID_DAYS, Registration
from alacop.core.sessions import EndReason, Session

# A search never loads the whole table: the page shows at most this many rows.
MAX_ROWS = 200
# An export is a download of one search; the command line (`alacop audit export`) streams everything.
EXPORT_MAX_ROWS = 10_000
MAX_TEXT = 100
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?$")
# OWASP CSV injection: a cell a spreadsheet would read as a formula starts with one of these.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# The export's columns: every field of a stored record, in the record's order.
AUDIT_COLUMNS = tuple(f.name for f in fields(AuditRecord))


def valid_id(value: str, what: str = "record") -> str:
    """An id from a URL or a form: a lower-case UUID, or NotFound (never a database error)."""
    if not _UUID.fullmatch(value or ""):
        raise NotFound(f"no such {what}", code=f"{what}_not_found")
    return value


def plain_text(value: str, *, limit: int, code: str = "invalid_text") -> str:
    """Free text typed in the console (a search, a note, a reason, a name): no control characters,
    which PostgreSQL refuses in text columns, and at most `limit` characters."""
    if len(value) > limit:
        raise InvalidInput(f"at most {limit} characters", code="field_too_long")
    if any((ord(c) < 32 and c not in "\t\r\n") or ord(c) == 127 for c in value):
        raise InvalidInput("control characters are not allowed", code=code)
    return value.strip()


def parse_training_date(value: str, today: date) -> date:
    """A training date typed in the console: YYYY-MM-DD, a real date, not in the future."""
    text = value.strip()
    try:
        if not _DATE.fullmatch(text):
            raise ValueError(text)
        when = date.fromisoformat(text)
    except ValueError:
        raise InvalidInput("enter the training date as YYYY-MM-DD", code="invalid_date") from None
    if when > today:
        raise InvalidInput("the training date cannot be in the future", code="training_in_future")
    return when


def _moment(value: str, *, end: bool) -> datetime | None:
    """A date (the whole day) or a date and time, in UTC; empty means no bound."""
    text = value.strip()
    if not text:
        return None
    try:
        if _DATE.fullmatch(text):
            day = date.fromisoformat(text)
            start = datetime.combine(day, time(), tzinfo=UTC)
            # "until 2026-01-05" includes that day.
            return start + timedelta(days=1) if end else start
        if _DATETIME.fullmatch(text):
            return datetime.fromisoformat(text.replace(" ", "T")).replace(tzinfo=UTC)
    except (ValueError, OverflowError):  # "until 9999-12-31" is past the last representable day
        pass
    raise InvalidInput("enter times as YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)", code="invalid_time")


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What a console user asked of the audit trail, checked; `as_details` is what the trail records."""

    user: str = ""
    agency_id: str = ""
    type: str = ""
    outcome: str = ""
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> AuditFilter:
        # A username or an AlaCOP email; the domain is the portal's own.
        user = values.get("user", "").strip().lower().split("@", 1)[0]
        if user:
            user = validate_username(user)
        agency_id = values.get("agency", "").strip()
        if agency_id:
            valid_id(agency_id, "agency")
        kind = values.get("type", "").strip()
        if kind and kind not in {str(t) for t in EventType}:
            raise InvalidInput("unknown event type", code="invalid_type")
        outcome = values.get("outcome", "").strip()
        if outcome and outcome not in {str(o) for o in Outcome}:
            raise InvalidInput("unknown outcome", code="invalid_outcome")
        since = _moment(values.get("since", ""), end=False)
        until = _moment(values.get("until", ""), end=True)
        if since and until and since >= until:
            raise InvalidInput("the start must be before the end", code="invalid_time")
        return cls(user=user, agency_id=agency_id, type=kind, outcome=outcome, since=since, until=until)

    def as_details(self) -> dict[str, object]:
        return {
            "user": self.user,
            "agency": self.agency_id,
            "type": self.type,
            "outcome": self.outcome,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
        }


@dataclass(frozen=True, slots=True)
class MethodSummary:
    """What the console shows of a sign-in method: never its secret."""

    kind: MethodKind
    name: str
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class UserView:
    user: User
    agency: Agency | None
    methods: tuple[MethodSummary, ...]
    recovery_codes_left: int
    locked: bool
    sessions: tuple[Session, ...]
    coordinates: tuple[Agency, ...]

    @property
    def training_due(self) -> date | None:
        t = self.user.training_date
        return t + timedelta(days=TRAINING_VALID_DAYS) if t else None


@dataclass(frozen=True, slots=True)
class AgencyView:
    agency: Agency
    coordinators: tuple[User, ...]


@dataclass(frozen=True, slots=True)
class AuditPage:
    records: tuple[AuditRecord, ...]
    # actor and subject ids on the page, to the usernames they belong to
    names: Mapping[str, str]
    truncated: bool


@dataclass
class _Target:
    """Filled in as the target is looked up, so a refusal names what was refused."""

    id: str | None = None
    name: str | None = None
    agency_id: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def user(self, user: User, domain: str) -> None:
        self.id, self.name, self.agency_id = user.id, f"{user.username}@{domain}", user.agency_id


class Console:
    def __init__(self, deps: Deps, directory: Directory, approvals: Approvals, chain: AuditChain) -> None:
        self._deps = deps
        self._directory = directory
        self._approvals = approvals
        self._chain = chain

    def _identifier(self, username: str) -> str:
        return f"{username}@{self._deps.domain}"

    # -- refusals ---------------------------------------------------------------------------------
    @asynccontextmanager
    async def _guard(
        self, actor: Actor, action: str, ctx: RequestContext, target: str | None = None
    ) -> AsyncIterator[_Target]:
        """Run one console action; a Forbidden inside it is audited as ConsoleRefused, then re-raised."""
        seen = _Target(id=target if target and _UUID.fullmatch(target) else None)
        try:
            yield seen
        except Forbidden as exc:
            if not exc.audited:
                async with self._deps.store.transaction() as tx:
                    await tx.audit.append(
                        AuditEvent(
                            EventType.CONSOLE_REFUSED,
                            Outcome.FAILURE,
                            action,
                            actor_id=actor.id,
                            subject_id=seen.id if seen.name else None,
                            subject_name=seen.name,
                            agency_id=seen.agency_id,
                            details={
                                "action": action,
                                "target": (target or "")[:64],
                                "actor_role": str(actor.role),
                                "why": exc.detail,
                                **seen.extra,
                            },
                        ),
                        ctx,
                    )
                exc.audited = True
            raise

    async def enter(self, actor: Actor, ctx: RequestContext, action: str = "console") -> None:
        """The console's front door: coordinators and administrators only."""
        async with self._guard(actor, action, ctx):
            actor.require_console()

    async def require_admin(self, actor: Actor, ctx: RequestContext, action: str) -> None:
        """An administrators-only page (agencies, policy)."""
        async with self._guard(actor, action, ctx):
            actor.require_console()
            actor.require_admin(change=False)

    async def _user(self, user_id: str) -> User:
        async with self._deps.store.read() as db:
            user = await db.users.get(valid_id(user_id, "user"))
        if user is None:
            raise NotFound("no such user", code="user_not_found")
        return user

    async def _target_user(
        self, actor: Actor, user_id: str, seen: _Target, *, change: bool, admin_only: bool = False
    ) -> User:
        actor.require_console()
        user = await self._user(user_id)
        seen.user(user, self._deps.domain)
        if admin_only:
            actor.require_admin(change=False)
        if change and actor.id is not None and user.id == actor.id:
            # Your own account changes on Security info, never through the console's powers.
            raise Forbidden("not on your own account")
        actor.require_user(user, change=change)
        return user

    # -- users ------------------------------------------------------------------------------------
    async def agencies_in_scope(self, actor: Actor) -> list[Agency]:
        actor.require_console()
        async with self._deps.store.read() as db:
            every = list(await db.agencies.list())
        return [a for a in every if actor.may_see(a.id)]

    async def search_users(
        self,
        actor: Actor,
        ctx: RequestContext,
        *,
        text: str = "",
        agency_id: str = "",
        status: str = "",
        role: str = "",
    ) -> list[tuple[User, Agency | None]]:
        text = plain_text(text, limit=MAX_TEXT)
        if status and status not in {str(s) for s in UserStatus}:
            raise InvalidInput("unknown status", code="invalid_status")
        if role and role not in {str(r) for r in Role}:
            raise InvalidInput("unknown role", code="invalid_role")
        async with self._guard(actor, "search_users", ctx, agency_id) as seen:
            actor.require_console()
            scope = actor.scope
            if agency_id:
                valid_id(agency_id, "agency")
                seen.agency_id = agency_id
                actor.require_agency(agency_id, change=False)
                scope = (agency_id,)
            query = UserQuery(text=text, agency_ids=scope, status=status or None, role=role or None)
            async with self._deps.store.read() as db:
                users = await db.users.search(replace(query, limit=MAX_ROWS))
                agencies = {a.id: a for a in await db.agencies.list()}
        return [(u, agencies.get(u.agency_id)) for u in users]

    async def user(self, actor: Actor, user_id: str, ctx: RequestContext) -> UserView:
        async with self._guard(actor, "view_user", ctx, user_id) as seen:
            user = await self._target_user(actor, user_id, seen, change=False)
        identifier = self._identifier(user.username)
        async with self._deps.store.read() as db:
            agency = await db.agencies.get(user.agency_id)
            methods = [m for m in await db.methods.for_user(user.id) if m.kind in ENROLLABLE]
            codes = len(await db.recovery_codes.unused_for_user(user.id))
            locked = False
            for key in (identifier, f"recover:{identifier}"):
                throttle = await db.throttles.get(key)
                locked = locked or (throttle is not None and throttle.locked_at is not None)
            sessions = tuple(await db.sessions.active_for_user(user.id))
            coordinates = [
                a for a in [await db.agencies.get(i) for i in await db.agencies.coordinated_by(user.id)] if a
            ]
        return UserView(
            user=user,
            agency=agency,
            methods=tuple(MethodSummary(m.kind, m.name, m.created_at, m.last_used_at) for m in methods),
            recovery_codes_left=codes,
            locked=locked,
            sessions=sessions,
            coordinates=tuple(coordinates),
        )

    async def unlock(self, actor: Actor, user_id: str, ctx: RequestContext) -> bool:
        async with self._guard(actor, "unlock", ctx, user_id) as seen:
            user = await self._target_user(actor, user_id, seen, change=True)
        return await self._directory.unlock(user.username, ctx, actor_id=actor.id)

    async def set_status(self, actor: Actor, user_id: str, status: UserStatus, ctx: RequestContext) -> User:
        action = "disable" if status is UserStatus.DISABLED else "enable"
        async with self._guard(actor, action, ctx, user_id) as seen:
            user = await self._target_user(actor, user_id, seen, change=True)
        if user.status is status:
            raise Conflict(f"the account is already {status}", code=f"already_{status}")
        return await self._directory.set_status(user.username, status, ctx, actor_id=actor.id, reason="console")

    async def reset_methods(self, actor: Actor, user_id: str, note: str, ctx: RequestContext) -> tuple[int, int]:
        """Remove every method after identity was re-proofed; the note says how (CJIS IA-5 n)."""
        async with self._guard(actor, "reset_methods", ctx, user_id) as seen:
            user = await self._target_user(actor, user_id, seen, change=True)
        how = plain_text(note, limit=500, code="note_required")
        return await self._directory.reset_methods(user.username, how, ctx, actor_id=actor.id)

    async def issue_link(self, actor: Actor, user_id: str, ctx: RequestContext) -> None:
        """A new activation link, for an approved account not yet activated (the core checks both)."""
        async with self._guard(actor, "activation_link", ctx, user_id) as seen:
            await self._target_user(actor, user_id, seen, change=True)
            await self._approvals.issue_link(actor, user_id, ctx)

    async def set_training(self, actor: Actor, user_id: str, value: str, ctx: RequestContext) -> User:
        """Record the date of the user's last security awareness training (CJIS 5.2)."""
        when = parse_training_date(value, self._deps.clock.now().date())
        async with self._guard(actor, "training", ctx, user_id) as seen:
            user = await self._target_user(actor, user_id, seen, change=True)
        async with self._deps.store.transaction() as tx:
            current = await tx.users.get(user.id, for_update=True)
            if current is None:
                raise NotFound("no such user", code="user_not_found")
            changed = replace(current, training_date=when)
            await tx.users.update(changed)
            await tx.audit.append(
                self._user_event(
                    EventType.TRAINING_UPDATED,
                    actor,
                    current,
                    before={"training_date": current.training_date.isoformat() if current.training_date else None},
                    after={"training_date": when.isoformat()},
                ),
                ctx,
            )
        return changed

    async def end_sessions(self, actor: Actor, user_id: str, ctx: RequestContext) -> int:
        async with self._guard(actor, "end_sessions", ctx, user_id) as seen:
            user = await self._target_user(actor, user_id, seen, change=True)
        now = self._deps.clock.now()
        async with self._deps.store.transaction() as tx:
            before = len(await tx.sessions.active_for_user(user.id))
            ended = await tx.sessions.end_all_for_user(user.id, now, EndReason.ADMIN)
            await tx.audit.append(
                self._user_event(
                    EventType.SESSIONS_ENDED,
                    actor,
                    user,
                    before={"active_sessions": before},
                    after={"active_sessions": 0},
                    extra={"ended": ended},
                ),
                ctx,
            )
        return ended

    async def set_role(self, actor: Actor, user_id: str, role_value: str, ctx: RequestContext) -> User:
        """Administrators only. The account's sessions end, so the next sign-in meets the new role's
        method policy (CJIS IA-11); a demoted coordinator loses their agencies."""
        try:
            role = Role(role_value)
        except ValueError:
            raise InvalidInput("choose user, coordinator or admin", code="invalid_role") from None
        async with self._guard(actor, "set_role", ctx, user_id) as seen:
            seen.extra["requested_role"] = str(role)
            user = await self._target_user(actor, user_id, seen, change=True, admin_only=True)
        if user.role is role:
            raise Conflict(f"the account is already {role}", code="role_unchanged")
        now = self._deps.clock.now()
        async with self._deps.store.transaction() as tx:
            current = await tx.users.get(user.id, for_update=True)
            if current is None:
                raise NotFound("no such user", code="user_not_found")
            coordinated = list(await tx.agencies.coordinated_by(current.id))
            before_oris = await self._oris(tx, coordinated)
            if role is not Role.COORDINATOR:
                for agency_id in coordinated:
                    rest = [u for u in await tx.agencies.coordinators(agency_id) if u != current.id]
                    await tx.agencies.set_coordinators(agency_id, rest)
            changed = replace(current, role=role)
            await tx.users.update(changed)
            ended = await tx.sessions.end_all_for_user(current.id, now, EndReason.ADMIN)
            await tx.audit.append(
                self._user_event(
                    EventType.ROLE_CHANGED,
                    actor,
                    current,
                    before={"role": str(current.role), "coordinates": before_oris},
                    after={"role": str(role), "coordinates": before_oris if role is Role.COORDINATOR else []},
                    extra={"sessions_ended": ended},
                ),
                ctx,
            )
        return changed

    def _user_event(
        self,
        event_type: EventType,
        actor: Actor,
        user: User,
        *,
        before: Mapping[str, object],
        after: Mapping[str, object],
        extra: Mapping[str, object] | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            event_type,
            Outcome.SUCCESS,
            "console",
            actor_id=actor.id,
            subject_id=user.id,
            subject_name=self._identifier(user.username),
            agency_id=user.agency_id,
            details={**(extra or {}), "before": dict(before), "after": dict(after)},
        )

    # -- registration requests --------------------------------------------------------------------
    async def requests(self, actor: Actor, ctx: RequestContext) -> list[tuple[Registration, Agency | None]]:
        async with self._guard(actor, "view_requests", ctx):
            queue = await self._approvals.queue(actor)
        async with self._deps.store.read() as db:
            agencies = {a.id: a for a in await db.agencies.list()}
        return [(r, agencies.get(r.agency_id)) for r in queue]

    async def request(self, actor: Actor, registration_id: str, ctx: RequestContext) -> tuple[Registration, Agency]:
        valid_id(registration_id, "registration")
        async with self._guard(actor, "view_request", ctx, registration_id) as seen:
            actor.require_console()
            registration = await self._registration(registration_id, seen)
            actor.require_agency(registration.agency_id, change=False)
        async with self._deps.store.read() as db:
            agency = await db.agencies.get(registration.agency_id)
        if agency is None:
            raise NotFound("the agency no longer exists", code="agency_not_found")
        return registration, agency

    async def _registration(self, registration_id: str, seen: _Target) -> Registration:
        async with self._deps.store.read() as db:
            registration = await db.registrations.get(registration_id)
        if registration is None:
            raise NotFound("no such registration", code="registration_not_found")
        seen.name, seen.agency_id = registration.application.email, registration.agency_id
        return registration

    async def approve(self, actor: Actor, registration_id: str, ctx: RequestContext) -> User:
        valid_id(registration_id, "registration")
        async with self._guard(actor, "approve", ctx, registration_id) as seen:
            actor.require_console()
            await self._registration(registration_id, seen)
            return await self._approvals.approve(actor, registration_id, ctx)

    async def deny(self, actor: Actor, registration_id: str, reason: str, ctx: RequestContext) -> Registration:
        valid_id(registration_id, "registration")
        async with self._guard(actor, "deny", ctx, registration_id) as seen:
            actor.require_console()
            await self._registration(registration_id, seen)
            why = plain_text(reason, limit=2000, code="reason_required")
            return await self._approvals.deny(actor, registration_id, why, ctx)

    # -- agencies (administrators) ----------------------------------------------------------------
    async def agencies(self, actor: Actor, ctx: RequestContext) -> list[AgencyView]:
        await self.require_admin(actor, ctx, "view_agencies")
        async with self._deps.store.read() as db:
            views = []
            for agency in await db.agencies.list():
                views.append(
                    AgencyView(agency, tuple(await self._users(db, await db.agencies.coordinators(agency.id))))
                )
        return views

    async def agency(self, actor: Actor, agency_id: str, ctx: RequestContext) -> AgencyView:
        valid_id(agency_id, "agency")
        await self.require_admin(actor, ctx, "view_agency")
        async with self._deps.store.read() as db:
            agency = await db.agencies.get(agency_id)
            if agency is None:
                raise NotFound("no such agency", code="agency_not_found")
            return AgencyView(agency, tuple(await self._users(db, await db.agencies.coordinators(agency.id))))

    async def create_agency(self, actor: Actor, ori: str, name: str, domains: str, ctx: RequestContext) -> Agency:
        async with self._guard(actor, "create_agency", ctx):
            actor.require_console()
            actor.require_admin(change=True)
        clean_name = plain_text(name, limit=200, code="invalid_name")
        return await self._directory.create_agency(ori, clean_name, split_list(domains), ctx, actor_id=actor.id)

    async def update_agency(
        self, actor: Actor, agency_id: str, ori: str, name: str, domains: str, ctx: RequestContext
    ) -> Agency:
        valid_id(agency_id, "agency")
        async with self._guard(actor, "update_agency", ctx, agency_id) as seen:
            seen.agency_id = agency_id
            actor.require_console()
            actor.require_admin(change=True)
        clean_name = " ".join(plain_text(name, limit=200, code="invalid_name").split())
        if not clean_name or len(clean_name) > 200:
            raise InvalidInput("an agency name is 1-200 characters", code="invalid_name")
        new_ori = validate_ori(ori)
        new_domains = tuple(sorted({validate_domain(d) for d in split_list(domains)}))
        async with self._deps.store.transaction() as tx:
            agency = await tx.agencies.get(agency_id)
            if agency is None:
                raise NotFound("no such agency", code="agency_not_found")
            other = await tx.agencies.by_ori(new_ori)
            if other is not None and other.id != agency.id:
                raise Conflict(f"an agency with ORI {new_ori} exists", code="agency_exists")
            changed = Agency(agency.id, new_ori, clean_name, new_domains, agency.created_at)
            if changed == agency:
                return agency
            await tx.agencies.update(changed)
            await tx.audit.append(
                AuditEvent(
                    EventType.AGENCY_UPDATED,
                    Outcome.SUCCESS,
                    "console",
                    actor_id=actor.id,
                    agency_id=agency.id,
                    details={"before": _agency_values(agency), "after": _agency_values(changed)},
                ),
                ctx,
            )
        return changed

    async def set_coordinators(self, actor: Actor, agency_id: str, usernames: str, ctx: RequestContext) -> list[str]:
        """Name the agency's coordinators; each must hold the coordinator role already."""
        valid_id(agency_id, "agency")
        async with self._guard(actor, "set_coordinators", ctx, agency_id) as seen:
            seen.agency_id = agency_id
            actor.require_console()
            actor.require_admin(change=True)
        wanted = sorted({validate_username(n.split("@", 1)[0]) for n in split_list(usernames)})
        if len(wanted) > 50:
            raise InvalidInput("at most 50 coordinators", code="too_many")
        async with self._deps.store.transaction() as tx:
            agency = await tx.agencies.get(agency_id)
            if agency is None:
                raise NotFound("no such agency", code="agency_not_found")
            users: list[User] = []
            for username in wanted:
                user = await tx.users.by_username(username)
                if user is None:
                    raise InvalidInput(f"no user {username}", code="user_not_found")
                if user.role is not Role.COORDINATOR:
                    raise InvalidInput(
                        f"{username} is not a coordinator: change the role first", code="not_coordinator"
                    )
                users.append(user)
            before = sorted(u.username for u in await self._users(tx, await tx.agencies.coordinators(agency.id)))
            if before == wanted:
                return wanted
            await tx.agencies.set_coordinators(agency.id, [u.id for u in users])
            await tx.audit.append(
                AuditEvent(
                    EventType.COORDINATORS_CHANGED,
                    Outcome.SUCCESS,
                    "console",
                    actor_id=actor.id,
                    agency_id=agency.id,
                    details={"ori": agency.ori, "before": {"coordinators": before}, "after": {"coordinators": wanted}},
                ),
                ctx,
            )
        return wanted

    @staticmethod
    async def _users(db: Transaction, ids: Sequence[str]) -> list[User]:
        """The accounts with these ids, by username."""
        found = [await db.users.get(i) for i in ids]
        return sorted((u for u in found if u is not None), key=lambda u: u.username)

    @staticmethod
    async def _oris(tx: Transaction, agency_ids: Sequence[str]) -> list[str]:
        found = [await tx.agencies.get(i) for i in agency_ids]
        return sorted(a.ori for a in found if a is not None)

    # -- the audit trail --------------------------------------------------------------------------
    async def _audit_query(
        self, actor: Actor, wanted: AuditFilter, action: str, ctx: RequestContext, limit: int
    ) -> AuditQuery:
        async with self._guard(actor, action, ctx, wanted.user or wanted.agency_id) as seen:
            actor.require_console()
            scope = actor.scope
            if wanted.agency_id:
                seen.agency_id = wanted.agency_id
                actor.require_agency(wanted.agency_id, change=False)
                scope = (wanted.agency_id,)
            user_id = None
            if wanted.user:
                async with self._deps.store.read() as db:
                    user = await db.users.by_username(wanted.user)
                if user is not None:
                    seen.user(user, self._deps.domain)
                    actor.require_user(user, change=False)
                    user_id = user.id
                else:
                    # Nobody by that name: the search finds nothing rather than everything.
                    user_id = "-"
        return AuditQuery(
            user_id=user_id,
            agency_ids=scope,
            type=wanted.type or None,
            outcome=wanted.outcome or None,
            since=wanted.since,
            until=wanted.until,
            limit=limit,
        )

    async def search_audit(self, actor: Actor, wanted: AuditFilter, ctx: RequestContext) -> AuditPage:
        """At most MAX_ROWS records, newest first; coordinators see their agencies' records only (AU-9)."""
        query = await self._audit_query(actor, wanted, "search_audit", ctx, MAX_ROWS + 1)
        reader = self._deps.store.audit_reader
        records = list(await reader.search(query))
        truncated = len(records) > MAX_ROWS
        records = records[:MAX_ROWS]
        async with self._deps.store.transaction() as tx:
            await tx.audit.append(
                AuditEvent(
                    EventType.AUDIT_SEARCHED,
                    Outcome.SUCCESS,
                    actor_id=actor.id,
                    details={"filter": wanted.as_details(), "count": len(records)},
                ),
                ctx,
            )
        names: dict[str, str] = {}
        async with self._deps.store.read() as db:
            for some_id in {i for r in records for i in (r.actor_id, r.subject_id) if i}:
                user = await db.users.get(some_id)
                if user is not None:
                    names[some_id] = user.username
        return AuditPage(tuple(records), names, truncated)

    async def export_audit(self, actor: Actor, wanted: AuditFilter, fmt: str, ctx: RequestContext) -> str:
        """The search's records, oldest first, as JSON lines or CSV; audited with the filter used."""
        if fmt not in ("csv", "jsonl"):
            raise InvalidInput("export as csv or jsonl", code="invalid_format")
        query = await self._audit_query(actor, wanted, "export_audit", ctx, EXPORT_MAX_ROWS)
        records = list(reversed(await self._deps.store.audit_reader.search(query)))
        body = audit_csv(records) if fmt == "csv" else audit_jsonl(records)
        async with self._deps.store.transaction() as tx:
            await tx.audit.append(
                AuditEvent(
                    EventType.AUDIT_EXPORTED,
                    Outcome.SUCCESS,
                    "console",
                    actor_id=actor.id,
                    details={"filter": wanted.as_details(), "format": fmt, "count": len(records)},
                ),
                ctx,
            )
        return body

    async def verify(self, actor: Actor, ctx: RequestContext) -> VerifyResult:
        """Walk the whole chain, as `alacop audit verify` does, and record the result (CJIS AU-9)."""
        await self.enter(actor, ctx, "verify_audit")
        reader = self._deps.store.audit_reader
        head = await reader.head()
        records = [r async for r in reader.records()]
        result = verify_chain(records, self._chain, head=head)
        async with self._deps.store.transaction() as tx:
            await tx.audit.append(
                AuditEvent(
                    EventType.AUDIT_VERIFIED,
                    Outcome.SUCCESS if result.ok else Outcome.FAILURE,
                    "" if result.ok else "chain_broken",
                    actor_id=actor.id,
                    details={"checked": result.checked, "first_bad_seq": result.first_bad_seq},
                ),
                ctx,
            )
        return result

    async def last_verification(self) -> AuditRecord | None:
        found = await self._deps.store.audit_reader.search(AuditQuery(type=str(EventType.AUDIT_VERIFIED), limit=1))
        return found[0] if found else None


def split_list(text: str) -> list[str]:
    """Items typed one a line, or separated by commas or spaces."""
    return [item for item in re.split(r"[\s,;]+", text) if item]


def _agency_values(agency: Agency) -> dict[str, object]:
    return {"ori": agency.ori, "name": agency.name, "email_domains": list(agency.email_domains)}


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    # OWASP CSV injection: prefix a quote, so a spreadsheet shows the text instead of running it.
    return "'" + text if text.startswith(_FORMULA_START) else text


def audit_csv(records: Sequence[AuditRecord]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(AUDIT_COLUMNS)
    for record in records:
        writer.writerow([_cell(getattr(record, column)) for column in AUDIT_COLUMNS])
    return out.getvalue()


def audit_jsonl(records: Sequence[AuditRecord]) -> str:
    return "".join(json.dumps(r.as_dict(), separators=(",", ":")) + "\n" for r in records)
