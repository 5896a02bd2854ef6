"""The console service: scope, rank and step-up checked in the core, refusals and changes audited."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from alacop.core.accounts import Role, UserStatus
from alacop.core.authz import Actor
from alacop.core.console import (
    MAX_ROWS,
    AuditFilter,
    audit_csv,
    audit_jsonl,
    parse_training_date,
    plain_text,
    valid_id,
)
from alacop.core.errors import Conflict, Forbidden, InvalidInput, NotFound, StepUpRequired
from alacop.core.ports import Throttle
from alacop.core.registration import RegistrationStatus
from tests.conftest import Harness, audit_details
from tests.support.console import CTX, ORI_A, ORI_B, World, build_world, tamper

Call = Callable[[World, Actor], Awaitable[object]]


@pytest.fixture
def w(harness: Harness) -> World:
    return build_world(harness)


def _run(w: World, call: Call, actor: Actor) -> Any:
    return w.h.run(lambda: call(w, actor))


# -- plain checks ---------------------------------------------------------------------------------
def test_training_dates_are_real_past_or_present_dates() -> None:
    today = date(2026, 1, 5)
    assert parse_training_date(" 2025-12-01 ", today) == date(2025, 12, 1)
    assert parse_training_date("2026-01-05", today) == today
    for bad in ("", "2025-13-01", "2025-02-30", "20251201", "2025-12-01T00:00", "yesterday", "٢٠٢٥-١٢-٠١"):
        with pytest.raises(InvalidInput) as refused:
            parse_training_date(bad, today)
        assert refused.value.code == "invalid_date", bad
    with pytest.raises(InvalidInput) as future:
        parse_training_date("2026-01-06", today)
    assert future.value.code == "training_in_future"


def test_free_text_refuses_control_characters_and_length() -> None:
    assert plain_text("  seen in person\nwith badge ", limit=50) == "seen in person\nwith badge"
    with pytest.raises(InvalidInput):
        plain_text("nul\x00byte", limit=50)
    with pytest.raises(InvalidInput):
        plain_text("x" * 51, limit=50)


def test_ids_must_be_uuids() -> None:
    good = "0b1e8c5e-6f1d-4c1a-9d7e-3f2a1b0c9d8e"
    assert valid_id(good) == good
    for bad in ("", "1", "../../etc", good.upper(), good + "x", "'; DROP TABLE users; --"):
        with pytest.raises(NotFound):
            valid_id(bad, "user")


def test_audit_filter_parses_and_refuses() -> None:
    f = AuditFilter.parse({"user": "CS0101@alacop.gov", "since": "2026-01-01", "until": "2026-01-05"})
    assert f.user == "cs0101"
    assert f.since == datetime(2026, 1, 1, tzinfo=UTC)
    # "until" a date includes that whole day.
    assert f.until == datetime(2026, 1, 6, tzinfo=UTC)
    assert AuditFilter.parse({"since": "2026-01-01T10:30"}).since == datetime(2026, 1, 1, 10, 30, tzinfo=UTC)
    for values in (
        {"type": "NoSuchEvent"},
        {"outcome": "maybe"},
        {"since": "last week"},
        {"since": "2026-02-30"},
        {"since": "2026-01-05", "until": "2026-01-01"},
        {"user": "not a username!"},
    ):
        with pytest.raises(InvalidInput):
            AuditFilter.parse(values)
    with pytest.raises(NotFound):
        AuditFilter.parse({"agency": "AL0010000"})


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted() -> None:
    from alacop.core.audit import AuditRecord

    record = AuditRecord(
        seq=1,
        occurred_at="2026-01-05T09:00:00.000000Z",
        type="LoginFailed",
        outcome="failure",
        reason="-2+3",
        actor_id=None,
        subject_id=None,
        subject_name="@SUM(A1)",
        agency_id=None,
        source_ip="10.0.0.1",
        user_agent='=HYPERLINK("http://evil.example")',
        request_id="+1",
        details="{}",
        prev_hash="0" * 64,
        hash="a" * 64,
    )
    rows = list(csv.DictReader(io.StringIO(audit_csv([record]))))
    assert rows[0]["user_agent"] == '\'=HYPERLINK("http://evil.example")'
    assert rows[0]["subject_name"] == "'@SUM(A1)"
    assert rows[0]["reason"] == "'-2+3"
    assert rows[0]["request_id"] == "'+1"
    assert rows[0]["source_ip"] == "10.0.0.1" and rows[0]["seq"] == "1"
    line = json.loads(audit_jsonl([record]))
    # JSON lines keep the exact text: no spreadsheet reads them, and a SIEM needs the original.
    assert line["user_agent"] == record.user_agent and line["details"] == {}


# -- who may enter ------------------------------------------------------------------------------------
def test_a_plain_user_is_refused_the_console_and_it_is_audited(w: World) -> None:
    start = w.seq()
    with pytest.raises(Forbidden):
        w.h.run(w.console.enter, w.actor(w.alice), CTX)
    [refused] = w.since(start)
    assert refused.type == "ConsoleRefused" and refused.reason == "console"
    assert refused.actor_id == w.alice.id
    assert audit_details(refused)["actor_role"] == "user"


def test_coordinators_and_admins_enter(w: World) -> None:
    start = w.seq()
    w.h.run(w.console.enter, w.actor(w.coord), CTX)
    w.h.run(w.console.enter, w.actor(w.admin), CTX)
    assert w.since(start) == []


# -- a coordinator of agency A tries agency B, for every console action ------------------------------
NOTE = "Seen in person with agency ID card"
OUTSIDE: dict[str, Call] = {
    "view_user": lambda w, a: w.console.user(a, w.bob.id, CTX),
    "unlock": lambda w, a: w.console.unlock(a, w.bob.id, CTX),
    "disable": lambda w, a: w.console.set_status(a, w.bob.id, UserStatus.DISABLED, CTX),
    "enable": lambda w, a: w.console.set_status(a, w.bob.id, UserStatus.ACTIVE, CTX),
    "reset_methods": lambda w, a: w.console.reset_methods(a, w.bob.id, NOTE, CTX),
    "activation_link": lambda w, a: w.console.issue_link(a, w.waiting_b.id, CTX),
    "training": lambda w, a: w.console.set_training(a, w.bob.id, "2025-12-01", CTX),
    "end_sessions": lambda w, a: w.console.end_sessions(a, w.bob.id, CTX),
    "set_role": lambda w, a: w.console.set_role(a, w.bob.id, "coordinator", CTX),
    "search_users": lambda w, a: w.console.search_users(a, CTX, agency_id=w.b.id),
    "view_request": lambda w, a: w.console.request(a, w.reg_b.id, CTX),
    "approve": lambda w, a: w.console.approve(a, w.reg_b.id, CTX),
    "deny": lambda w, a: w.console.deny(a, w.reg_b.id, "Not on our staff", CTX),
    "search_audit": lambda w, a: w.console.search_audit(a, AuditFilter(agency_id=w.b.id), CTX),
    "search_audit_by_user": lambda w, a: w.console.search_audit(a, AuditFilter(user="bob01"), CTX),
    "export_audit": lambda w, a: w.console.export_audit(a, AuditFilter(agency_id=w.b.id), "csv", CTX),
    "view_agencies": lambda w, a: w.console.agencies(a, CTX),
    "view_agency": lambda w, a: w.console.agency(a, w.b.id, CTX),
    "create_agency": lambda w, a: w.console.create_agency(a, "AL0030000", "Third County", "third.gov", CTX),
    "update_agency": lambda w, a: w.console.update_agency(a, w.b.id, ORI_B, "Renamed", "", CTX),
    "set_coordinators": lambda w, a: w.console.set_coordinators(a, w.b.id, "coord01", CTX),
    "view_policy": lambda w, a: w.console.require_admin(a, CTX, "view_policy"),
}


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh", "stale"])
@pytest.mark.parametrize("action", sorted(OUTSIDE))
def test_a_coordinator_is_refused_outside_their_agency_and_it_is_audited(w: World, action: str, fresh: bool) -> None:
    actor = w.actor(w.coord, fresh=fresh)
    start = w.seq()
    # Out of scope is a refusal, never a re-authentication prompt, however old the sign-in.
    with pytest.raises(Forbidden):
        _run(w, OUTSIDE[action], actor)
    # Nothing changed: the only record written is the refusal (every change audits in its transaction).
    [refused] = w.since(start)
    assert refused.type == "ConsoleRefused"
    assert refused.outcome == "failure"
    assert refused.actor_id == w.coord.id
    expected = action.removesuffix("_by_user")
    assert refused.reason == expected and audit_details(refused)["action"] == expected
    assert w.user(w.bob.id).status is UserStatus.ACTIVE
    assert w.user(w.bob.id).training_date is None
    assert w.user(w.bob.id).role is Role.USER


def test_refusals_name_the_target_and_its_agency(w: World) -> None:
    with pytest.raises(Forbidden):
        w.h.run(w.console.set_status, w.actor(w.coord), w.bob.id, UserStatus.DISABLED, CTX)
    [refused] = w.h.events("ConsoleRefused")
    assert (refused.subject_id, refused.subject_name, refused.agency_id) == (w.bob.id, "bob01@alacop.gov", w.b.id)
    assert audit_details(refused)["target"] == w.bob.id


# -- a coordinator on accounts that outrank them, and on their own ----------------------------------
RANKED: dict[str, Callable[[World, Actor, str], Awaitable[object]]] = {
    "unlock": lambda w, a, t: w.console.unlock(a, t, CTX),
    "disable": lambda w, a, t: w.console.set_status(a, t, UserStatus.DISABLED, CTX),
    "reset_methods": lambda w, a, t: w.console.reset_methods(a, t, NOTE, CTX),
    "training": lambda w, a, t: w.console.set_training(a, t, "2025-12-01", CTX),
    "end_sessions": lambda w, a, t: w.console.end_sessions(a, t, CTX),
    "set_role": lambda w, a, t: w.console.set_role(a, t, "admin", CTX),
    "activation_link": lambda w, a, t: w.console.issue_link(a, t, CTX),
}


@pytest.mark.parametrize("target", ["coord2", "admin", "coord"])
@pytest.mark.parametrize("action", sorted(RANKED))
def test_a_coordinator_cannot_act_on_coordinators_admins_or_themselves(w: World, action: str, target: str) -> None:
    victim = getattr(w, target)
    start = w.seq()
    with pytest.raises(Forbidden):
        w.h.run(lambda: RANKED[action](w, w.actor(w.coord), victim.id))
    [refused] = w.since(start)
    assert refused.type == "ConsoleRefused" and refused.reason == action and refused.subject_id == victim.id
    after = w.user(victim.id)
    assert (after.status, after.role, after.training_date) == (UserStatus.ACTIVE, victim.role, None)


def test_a_coordinator_may_view_colleagues_in_their_agency(w: World) -> None:
    shown = w.h.run(w.console.user, w.actor(w.coord), w.coord2.id, CTX)
    assert shown.user.id == w.coord2.id
    assert [a.ori for a in shown.coordinates] == [ORI_A]


@pytest.mark.parametrize("action", ["disable", "set_role", "end_sessions", "reset_methods"])
def test_an_admin_cannot_use_the_console_on_their_own_account(w: World, action: str) -> None:
    with pytest.raises(Forbidden):
        w.h.run(lambda: RANKED[action](w, w.actor(w.admin), w.admin.id))
    assert audit_details(w.h.events("ConsoleRefused")[-1])["why"] == "not on your own account"
    assert w.user(w.admin.id).status is UserStatus.ACTIVE and w.user(w.admin.id).role is Role.ADMIN


def test_a_coordinator_cannot_elevate_anyone_or_name_coordinators(w: World) -> None:
    for call in (
        lambda: w.console.set_role(w.actor(w.coord), w.coord.id, "admin", CTX),
        lambda: w.console.set_role(w.actor(w.coord), w.alice.id, "coordinator", CTX),
        lambda: w.console.set_coordinators(w.actor(w.coord), w.a.id, "coord01 coord02", CTX),
        lambda: w.console.update_agency(w.actor(w.coord), w.a.id, ORI_A, "Mine now", "", CTX),
    ):
        with pytest.raises(Forbidden):
            w.h.run(call)
    assert w.user(w.coord.id).role is Role.COORDINATOR and w.user(w.alice.id).role is Role.USER
    assert [e.reason for e in w.h.events("ConsoleRefused")] == [
        "set_role",
        "set_role",
        "set_coordinators",
        "update_agency",
    ]


# -- step-up: every change needs a recent sign-in (CJIS IA-11) ---------------------------------------
INSIDE: dict[str, Call] = {
    "unlock": lambda w, a: w.console.unlock(a, w.alice.id, CTX),
    "disable": lambda w, a: w.console.set_status(a, w.alice.id, UserStatus.DISABLED, CTX),
    "reset_methods": lambda w, a: w.console.reset_methods(a, w.alice.id, NOTE, CTX),
    "activation_link": lambda w, a: w.console.issue_link(a, w.waiting_a.id, CTX),
    "training": lambda w, a: w.console.set_training(a, w.alice.id, "2025-12-01", CTX),
    "end_sessions": lambda w, a: w.console.end_sessions(a, w.alice.id, CTX),
    "approve": lambda w, a: w.console.approve(a, w.reg_a.id, CTX),
    "deny": lambda w, a: w.console.deny(a, w.reg_a.id, "Not on our staff", CTX),
}
ADMIN_ONLY: dict[str, Call] = {
    "set_role": lambda w, a: w.console.set_role(a, w.alice.id, "coordinator", CTX),
    "create_agency": lambda w, a: w.console.create_agency(a, "AL0030000", "Third County", "third.gov", CTX),
    "update_agency": lambda w, a: w.console.update_agency(a, w.b.id, ORI_B, "Renamed", "", CTX),
    "set_coordinators": lambda w, a: w.console.set_coordinators(a, w.a.id, "coord01", CTX),
}


@pytest.mark.parametrize(
    ("who", "action"),
    [("coord", a) for a in sorted(INSIDE)] + [("admin", a) for a in sorted({**INSIDE, **ADMIN_ONLY})],
)
def test_every_change_needs_a_recent_sign_in(w: World, who: str, action: str) -> None:
    call = {**INSIDE, **ADMIN_ONLY}[action]
    start = w.seq()
    with pytest.raises(StepUpRequired):
        _run(w, call, w.actor(getattr(w, who), fresh=False))
    assert w.since(start) == []
    _run(w, call, w.actor(getattr(w, who)))
    assert w.since(start), "the same change works once the sign-in is recent"


# -- before and after in every change's record (CJIS AU-3) -------------------------------------------
def _lock(w: World, username: str) -> None:
    async def go() -> None:
        now = w.h.clock.now()
        async with w.h.portal.deps.store.transaction() as tx:
            await tx.throttles.put(Throttle(f"{username}@alacop.gov", (now,) * 5, now))

    w.h.run(go)


def test_changes_record_before_and_after(w: World) -> None:
    admin = w.actor(w.admin)
    c = w.console
    run = w.h.run
    _lock(w, "alice01")
    assert run(c.user, admin, w.alice.id, CTX).locked
    assert run(c.unlock, admin, w.alice.id, CTX) is True
    assert not run(c.user, admin, w.alice.id, CTX).locked
    run(c.set_training, admin, w.alice.id, "2025-12-01", CTX)
    run(c.set_training, admin, w.alice.id, "2025-12-15", CTX)
    w.h.sign_in("alice01")
    run(c.set_status, admin, w.alice.id, UserStatus.DISABLED, CTX)
    run(c.set_status, admin, w.alice.id, UserStatus.ACTIVE, CTX)
    w.h.sign_in("alice01")
    assert run(c.end_sessions, admin, w.alice.id, CTX) == 1
    assert run(c.reset_methods, admin, w.alice.id, NOTE, CTX) == (1, 10)
    run(c.set_role, admin, w.alice.id, "coordinator", CTX)
    run(c.issue_link, admin, w.waiting_a.id, CTX)
    run(c.update_agency, admin, w.b.id, "al0020001", " Baldwin  County ", "b.gov, a.gov", CTX)
    run(c.set_coordinators, admin, w.a.id, "coord01\nalice01@alacop.gov", CTX)
    run(c.create_agency, admin, "AL0030000", "Third County", "third.gov", CTX)
    run(c.approve, admin, w.reg_a.id, CTX)
    run(c.deny, admin, w.reg_b.id, "Not on our staff", CTX)

    def changes(kind: str) -> list[tuple[Any, Any]]:
        return [(audit_details(e)["before"], audit_details(e)["after"]) for e in w.h.events(kind)]

    assert changes("AccountUnlocked") == [({"locked": True}, {"locked": False})]
    assert changes("TrainingUpdated") == [
        ({"training_date": None}, {"training_date": "2025-12-01"}),
        ({"training_date": "2025-12-01"}, {"training_date": "2025-12-15"}),
    ]
    assert changes("AccountDisabled") == [({"status": "active"}, {"status": "disabled"})]
    assert changes("AccountEnabled") == [({"status": "disabled"}, {"status": "active"})]
    assert changes("SessionsEnded") == [({"active_sessions": 1}, {"active_sessions": 0})]
    assert changes("MethodsReset") == [({"methods": 1, "recovery_codes": 10}, {"methods": 0, "recovery_codes": 0})]
    assert audit_details(w.h.events("MethodsReset")[0])["reproofing_note"] == NOTE
    assert changes("RoleChanged") == [({"role": "user", "coordinates": []}, {"role": "coordinator", "coordinates": []})]
    [reissued] = [e for e in w.h.events("ActivationLinkIssued") if e.reason == "reissued"]
    assert audit_details(reissued)["before"] == {"activation_link": "unused link, now void"}
    assert audit_details(reissued)["after"]["activation_link"].startswith("until ")
    assert changes("AgencyUpdated") == [
        (
            {"ori": ORI_B, "name": "Test County Sheriff", "email_domains": ["test.al.gov"]},
            {"ori": "AL0020001", "name": "Baldwin County", "email_domains": ["a.gov", "b.gov"]},
        )
    ]
    assert changes("CoordinatorsChanged") == [
        ({"coordinators": ["coord01", "coord02"]}, {"coordinators": ["alice01", "coord01"]})
    ]
    created = [e for e in w.h.events("AgencyCreated") if e.actor_id == w.admin.id]
    assert [(audit_details(e)["before"], audit_details(e)["after"]["ori"]) for e in created] == [(None, "AL0030000")]
    assert changes("RegistrationApproved")[-1] == (
        {"status": "pending"},
        {"status": "approved", "username": "pp0101"},
    )
    assert changes("RegistrationDenied") == [
        ({"status": "pending"}, {"status": "denied", "reason": "Not on our staff"})
    ]
    # Every change names who made it and whom it concerned.
    for kind in ("AccountUnlocked", "TrainingUpdated", "SessionsEnded", "RoleChanged", "AccountDisabled"):
        assert all(e.actor_id == w.admin.id and e.subject_id == w.alice.id for e in w.h.events(kind)), kind


def test_unchanged_status_and_role_are_conflicts(w: World) -> None:
    admin = w.actor(w.admin)
    with pytest.raises(Conflict):
        w.h.run(w.console.set_status, admin, w.alice.id, UserStatus.ACTIVE, CTX)
    with pytest.raises(Conflict):
        w.h.run(w.console.set_role, admin, w.alice.id, "user", CTX)
    with pytest.raises(InvalidInput):
        w.h.run(w.console.set_role, admin, w.alice.id, "root", CTX)
    assert w.h.events("AccountEnabled") == [] and w.h.events("RoleChanged") == []


def test_bad_input_changes_nothing(w: World) -> None:
    admin = w.actor(w.admin)
    start = w.seq()
    for call, error in (
        (lambda: w.console.set_training(admin, w.alice.id, "2026-01-06", CTX), InvalidInput),
        (lambda: w.console.set_training(admin, w.alice.id, "05/01/2026", CTX), InvalidInput),
        (lambda: w.console.reset_methods(admin, w.alice.id, "   ", CTX), InvalidInput),
        (lambda: w.console.reset_methods(admin, w.alice.id, "x" * 501, CTX), InvalidInput),
        (lambda: w.console.deny(admin, w.reg_a.id, "", CTX), InvalidInput),
        (lambda: w.console.deny(admin, w.reg_a.id, "bad\x00reason", CTX), InvalidInput),
        (lambda: w.console.unlock(admin, "0b1e8c5e-6f1d-4c1a-9d7e-3f2a1b0c9d8e", CTX), NotFound),
        (lambda: w.console.unlock(admin, "not-an-id", CTX), NotFound),
        (lambda: w.console.request(admin, "0b1e8c5e-6f1d-4c1a-9d7e-3f2a1b0c9d8e", CTX), NotFound),
        (lambda: w.console.issue_link(admin, w.alice.id, CTX), Conflict),
        (lambda: w.console.update_agency(admin, w.b.id, ORI_A, "Clash", "", CTX), Conflict),
        (lambda: w.console.update_agency(admin, w.b.id, "A1", "Bad ORI", "", CTX), InvalidInput),
        (lambda: w.console.update_agency(admin, w.b.id, ORI_B, "Name", "not a domain", CTX), InvalidInput),
        (lambda: w.console.create_agency(admin, ORI_A, "Again", "", CTX), Conflict),
        (lambda: w.console.create_agency(admin, "AL0030000", "Nul\x00name", "", CTX), InvalidInput),
        (lambda: w.console.set_coordinators(admin, w.a.id, "alice01", CTX), InvalidInput),
        (lambda: w.console.set_coordinators(admin, w.a.id, "nobody01", CTX), InvalidInput),
        (lambda: w.console.search_users(admin, CTX, status="gone"), InvalidInput),
        (lambda: w.console.export_audit(admin, AuditFilter(), "xlsx", CTX), InvalidInput),
    ):
        with pytest.raises(error):
            w.h.run(call)
    assert w.since(start) == []
    assert w.user(w.alice.id).training_date is None


# -- registration requests and activation links ---------------------------------------------------
def test_coordinators_see_their_agencies_pending_requests_with_every_field(w: World) -> None:
    queue = w.h.run(w.console.requests, w.actor(w.coord), CTX)
    assert [r.id for r, _ in queue] == [w.reg_a.id]
    assert queue[0][1] is not None and queue[0][1].ori == ORI_A
    admin_queue = w.h.run(w.console.requests, w.actor(w.admin), CTX)
    assert {r.id for r, _ in admin_queue} == {w.reg_a.id, w.reg_b.id}
    registration, agency = w.h.run(w.console.request, w.actor(w.coord), w.reg_a.id, CTX)
    assert agency.id == w.a.id
    assert registration.application.supervisor == "Sgt. Dana Lee"


def test_a_coordinator_approves_and_denies_within_their_agency(w: World) -> None:
    user = w.h.run(w.console.approve, w.actor(w.coord), w.reg_a.id, CTX)
    assert user.agency_id == w.a.id and user.awaiting_activation
    with pytest.raises(Conflict):
        w.h.run(w.console.deny, w.actor(w.coord), w.reg_a.id, "Changed my mind", CTX)
    [approved] = w.h.events("RegistrationApproved")[-1:]
    assert approved.actor_id == w.coord.id


def test_activation_links_only_for_accounts_awaiting_activation(w: World) -> None:
    w.h.run(w.console.issue_link, w.actor(w.coord), w.waiting_a.id, CTX)
    with pytest.raises(Conflict):
        w.h.run(w.console.issue_link, w.actor(w.coord), w.alice.id, CTX)
    assert [e.actor_id for e in w.h.events("ActivationLinkIssued") if e.reason == "reissued"] == [w.coord.id]


# -- roles and coordinators ---------------------------------------------------------------------------
def test_demoting_a_coordinator_ends_their_sessions_and_their_agencies(w: World) -> None:
    w.h.sign_in("coord02")
    w.h.run(w.console.set_role, w.actor(w.admin), w.coord2.id, "user", CTX)
    [changed] = w.h.events("RoleChanged")
    details = audit_details(changed)
    assert details["before"] == {"role": "coordinator", "coordinates": [ORI_A]}
    assert details["after"] == {"role": "user", "coordinates": []}
    assert details["sessions_ended"] == 1

    async def go() -> tuple[list[str], list[str]]:
        async with w.h.portal.deps.store.read() as db:
            return list(await db.agencies.coordinators(w.a.id)), list(await db.agencies.coordinated_by(w.coord2.id))

    coordinators, coordinated = w.h.run(go)
    assert coordinators == [w.coord.id] and coordinated == []


# -- users, scoped ------------------------------------------------------------------------------------
def test_user_search_is_scoped_and_filtered(w: World) -> None:
    def names(actor: Actor, **filters: str) -> list[str]:
        return [u.username for u, _ in w.h.run(lambda: w.console.search_users(actor, CTX, **filters))]

    coord, admin = w.actor(w.coord), w.actor(w.admin)
    mine, theirs = w.waiting_a.username, w.waiting_b.username
    assert names(coord) == sorted(["admin01", "alice01", "coord01", "coord02", mine])
    assert {"alice01", "bob01", mine, theirs} <= set(names(admin))
    assert names(admin, agency_id=w.b.id) == sorted(["bob01", theirs])
    assert names(coord, text="ALICE") == ["alice01"]
    assert names(coord, text="%") == []
    assert names(admin, role="coordinator") == ["coord01", "coord02"]
    w.h.run(w.console.set_status, admin, w.alice.id, UserStatus.DISABLED, CTX)
    assert names(coord, status="disabled") == ["alice01"]
    # A coordinator of no agency sees nobody.
    nobody = Actor(id=w.coord2.id, role=Role.COORDINATOR, agency_ids=frozenset(), fresh=True)
    assert names(nobody) == []


def test_the_user_view_shows_what_a_coordinator_needs(w: World) -> None:
    w.h.sign_in("alice01")
    shown = w.h.run(w.console.user, w.actor(w.coord), w.alice.id, CTX)
    assert shown.agency is not None and shown.agency.ori == ORI_A
    assert [m.kind for m in shown.methods] == ["totp"] and shown.recovery_codes_left == 10
    assert len(shown.sessions) == 1 and shown.user.last_login_at is not None
    assert not shown.locked and not shown.user.awaiting_activation
    waiting = w.h.run(w.console.user, w.actor(w.coord), w.waiting_a.id, CTX)
    assert waiting.user.awaiting_activation and waiting.training_due == waiting.user.training_date + timedelta(days=365)


# -- the audit trail, scoped, exported and verified --------------------------------------------------
def test_audit_search_is_scoped_to_the_coordinators_agencies(w: World) -> None:
    page = w.h.run(w.console.search_audit, w.actor(w.coord), AuditFilter(), CTX)
    assert page.records and {r.agency_id for r in page.records} == {w.a.id}
    everything = w.h.run(w.console.search_audit, w.actor(w.admin), AuditFilter(), CTX)
    assert {w.a.id, w.b.id} <= {r.agency_id for r in everything.records}
    by_user = w.h.run(w.console.search_audit, w.actor(w.coord), AuditFilter(user="alice01"), CTX)
    assert by_user.records and all(w.alice.id in (r.subject_id, r.actor_id) for r in by_user.records)
    kind = w.h.run(w.console.search_audit, w.actor(w.admin), AuditFilter(type="RegistrationSubmitted"), CTX)
    assert len(kind.records) == 4
    nobody = w.h.run(w.console.search_audit, w.actor(w.admin), AuditFilter(user="nobody01"), CTX)
    assert nobody.records == ()
    searched = w.h.events("AuditSearched")
    assert [audit_details(e)["filter"]["user"] for e in searched] == ["", "", "alice01", "", "nobody01"]
    assert searched[0].actor_id == w.coord.id


def test_audit_search_is_capped_and_time_bounded(w: World) -> None:
    for _ in range(MAX_ROWS + 5):
        w.h.run(w.console.end_sessions, w.actor(w.admin), w.alice.id, CTX)
    page = w.h.run(w.console.search_audit, w.actor(w.admin), AuditFilter(), CTX)
    assert len(page.records) == MAX_ROWS and page.truncated
    later = AuditFilter(since=w.h.clock.now() + timedelta(seconds=1))
    assert w.h.run(w.console.search_audit, w.actor(w.admin), later, CTX).records == ()


def test_exports_are_scoped_audited_and_oldest_first(w: World) -> None:
    body = w.h.run(w.console.export_audit, w.actor(w.coord), AuditFilter(type="RegistrationSubmitted"), "jsonl", CTX)
    lines = [json.loads(line) for line in body.splitlines()]
    assert [line["agency_id"] for line in lines] == [w.a.id, w.a.id]
    assert lines[0]["seq"] < lines[1]["seq"]
    table = w.h.run(w.console.export_audit, w.actor(w.admin), AuditFilter(), "csv", CTX)
    rows = list(csv.DictReader(io.StringIO(table)))
    assert {r["agency_id"] for r in rows} >= {w.a.id, w.b.id}
    [first, second] = w.h.events("AuditExported")
    assert audit_details(first) == {
        "count": 2,
        "filter": {"agency": "", "outcome": "", "since": "", "type": "RegistrationSubmitted", "until": "", "user": ""},
        "format": "jsonl",
    }
    assert first.actor_id == w.coord.id and audit_details(second)["format"] == "csv"


def test_verify_finds_the_chain_intact_then_broken(w: World) -> None:
    result = w.h.run(w.console.verify, w.actor(w.coord), CTX)
    assert result.ok and result.checked > 10
    last = w.h.run(w.console.last_verification)
    assert last is not None and last.outcome == "success"
    tamper(w, "UPDATE audit_events SET outcome = 'failure' WHERE seq = 3")
    broken = w.h.run(w.console.verify, w.actor(w.admin), CTX)
    assert not broken.ok and broken.first_bad_seq == 3
    last = w.h.run(w.console.last_verification)
    assert last is not None and last.outcome == "failure" and last.reason == "chain_broken"


def test_the_operator_acts_as_an_administrator(w: World) -> None:
    operator = Actor.operator()
    w.h.run(w.console.set_training, operator, w.bob.id, "2025-06-30", CTX)
    assert w.user(w.bob.id).training_date == date(2025, 6, 30)
    assert w.h.events("TrainingUpdated")[0].actor_id is None


def test_a_refused_request_stays_pending(w: World) -> None:
    with pytest.raises(Forbidden):
        w.h.run(w.console.approve, w.actor(w.coord), w.reg_b.id, CTX)

    async def go() -> RegistrationStatus:
        async with w.h.portal.deps.store.read() as db:
            found = await db.registrations.get(w.reg_b.id)
        assert found is not None
        return found.status

    assert w.h.run(go) is RegistrationStatus.PENDING
