"""The console at /admin over HTTP: who gets in, agency lines, step-up, CSRF, bad input, audit pages."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from alacop.core.accounts import User, UserStatus
from alacop.core.directory import Directory
from alacop.core.ports import Throttle
from alacop.core.session_manager import open_session
from tests.conftest import STRONG, Harness, audit_details, sqlite_only
from tests.support.console import CTX, ORI_A, ORI_B, World, build_world, tamper

NOTE = "Seen in person with agency ID card"
Path = Callable[[World], str]


@pytest.fixture
def w(harness: Harness) -> World:
    return build_world(harness)


def _sign_in(w: World, user: User) -> str:
    """Sign in as this user (in a fresh browser); returns the form token for the console's forms."""
    w.h.client.cookies.clear()
    done = w.h.sign_in(user.username)
    assert done.url.path == "/apps", done.url
    return str(w.h.client.get("/apps").context["csrf_token"])


def _post(w: World, path: str, token: str | None, **data: str) -> Any:
    body = {**data, **({"csrf_token": token} if token is not None else {})}
    return w.h.client.post(path, data=body, follow_redirects=False)


def _location(response: Any) -> str:
    assert response.status_code == 303, (response.status_code, getattr(response, "text", "")[:300])
    return str(response.headers["location"])


def _refused(response: Any, code: str, status: int) -> None:
    assert response.status_code == status, response.status_code
    assert response.template.name == "error.html"
    assert f'data-error-code="{code}"' in response.text


def _user(w: World, user_id: str) -> User:
    return w.user(user_id)


# -- who gets in --------------------------------------------------------------------------------------
def test_signed_out_visitors_go_to_sign_in(w: World) -> None:
    for path in ("/admin", "/admin/users", f"/admin/users/{w.alice.id}", "/admin/audit", "/admin/policy"):
        assert _location(w.h.client.get(path, follow_redirects=False)) == "/login", path


CONSOLE_PAGES = ["/admin", "/admin/users", "/admin/requests", "/admin/audit", "/admin/agencies", "/admin/policy"]


@sqlite_only
@pytest.mark.parametrize("path", CONSOLE_PAGES)
def test_a_plain_user_is_refused_every_console_page_and_it_is_audited(w: World, path: str) -> None:
    _sign_in(w, w.alice)
    start = w.seq()
    _refused(w.h.client.get(path), "forbidden", 403)
    [refused] = w.since(start)
    assert (refused.type, refused.actor_id) == ("ConsoleRefused", w.alice.id)
    assert audit_details(refused)["actor_role"] == "user"


def test_a_plain_user_is_refused_console_changes(w: World) -> None:
    token = _sign_in(w, w.alice)
    start = w.seq()
    _refused(_post(w, f"/admin/users/{w.bob.id}/disable", token), "forbidden", 403)
    [refused] = w.since(start)
    assert refused.type == "ConsoleRefused" and refused.reason == "disable"
    assert _user(w, w.bob.id).status is UserStatus.ACTIVE


def test_only_coordinators_and_admins_see_the_console_link(w: World) -> None:
    _sign_in(w, w.alice)
    assert 'href="/admin"' not in w.h.client.get("/apps").text
    _sign_in(w, w.coord)
    page = w.h.client.get("/apps").text
    assert 'href="/admin"' in page
    users = w.h.client.get("/admin/users").text
    assert 'href="/admin/audit"' in users and 'href="/admin/agencies"' not in users
    _sign_in(w, w.admin)
    users = w.h.client.get("/admin/users").text
    assert 'href="/admin/agencies"' in users and 'href="/admin/policy"' in users


# -- agency lines: a coordinator of A tries B, for every view and action -----------------------------
OUTSIDE: dict[str, tuple[str, Path, dict[str, str]]] = {
    "view_user": ("GET", lambda w: f"/admin/users/{w.bob.id}", {}),
    "search_users": ("GET", lambda w: f"/admin/users?agency={w.b.id}", {}),
    "view_request": ("GET", lambda w: f"/admin/requests/{w.reg_b.id}", {}),
    "search_audit": ("GET", lambda w: f"/admin/audit?agency={w.b.id}", {}),
    "search_audit_by_user": ("GET", lambda w: "/admin/audit?user=bob01", {}),
    "view_agencies": ("GET", lambda w: "/admin/agencies", {}),
    "view_agency": ("GET", lambda w: f"/admin/agencies/{w.b.id}", {}),
    "view_policy": ("GET", lambda w: "/admin/policy", {}),
    "unlock": ("POST", lambda w: f"/admin/users/{w.bob.id}/unlock", {}),
    "disable": ("POST", lambda w: f"/admin/users/{w.bob.id}/disable", {}),
    "enable": ("POST", lambda w: f"/admin/users/{w.bob.id}/enable", {}),
    "reset_methods": ("POST", lambda w: f"/admin/users/{w.bob.id}/reset-methods", {"note": NOTE}),
    "activation_link": ("POST", lambda w: f"/admin/users/{w.waiting_b.id}/activation-link", {}),
    "training": ("POST", lambda w: f"/admin/users/{w.bob.id}/training", {"training_date": "2025-12-01"}),
    "end_sessions": ("POST", lambda w: f"/admin/users/{w.bob.id}/end-sessions", {}),
    "set_role": ("POST", lambda w: f"/admin/users/{w.bob.id}/role", {"role": "coordinator"}),
    "approve": ("POST", lambda w: f"/admin/requests/{w.reg_b.id}/approve", {}),
    "deny": ("POST", lambda w: f"/admin/requests/{w.reg_b.id}/deny", {"reason": "Not on our staff"}),
    "create_agency": ("POST", lambda w: "/admin/agencies", {"ori": "AL0030000", "name": "Third", "email_domains": ""}),
    "update_agency": (
        "POST",
        lambda w: f"/admin/agencies/{w.b.id}",
        {"ori": ORI_B, "name": "Mine", "email_domains": ""},
    ),
    "set_coordinators": ("POST", lambda w: f"/admin/agencies/{w.b.id}/coordinators", {"coordinators": "coord01"}),
    "export_audit": ("POST", lambda w: "/admin/audit/export", {"format": "csv"}),
}


@sqlite_only
@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale"])
@pytest.mark.parametrize("action", sorted(OUTSIDE))
def test_a_coordinator_is_refused_outside_their_agency(w: World, action: str, stale: bool) -> None:
    token = _sign_in(w, w.coord)
    if stale:
        # An old sign-in changes nothing: out of scope is a 403, never a re-authentication prompt.
        w.h.clock.advance(timedelta(minutes=11))
    method, path, data = OUTSIDE[action]
    start = w.seq()
    if method == "GET":
        response = w.h.client.get(path(w))
    else:
        # The export names agency B in its form; every other action names B's records in its path.
        extra = {"agency": w.b.id} if action == "export_audit" else {}
        response = _post(w, path(w), token, **data, **extra)
    _refused(response, "forbidden", 403)
    [refused] = w.since(start)
    assert refused.type == "ConsoleRefused" and refused.actor_id == w.coord.id
    assert refused.reason == action.removesuffix("_by_user")
    assert "RequestRefused" not in [r.type for r in w.since(start)]
    bob = _user(w, w.bob.id)
    assert (bob.status, bob.role, bob.training_date) == (UserStatus.ACTIVE, "user", None)


@sqlite_only
@pytest.mark.parametrize("target", ["coord2", "admin", "coord"])
@pytest.mark.parametrize(
    ("action", "data"),
    [("disable", {}), ("reset-methods", {"note": NOTE}), ("training", {"training_date": "2025-12-01"})],
)
def test_a_coordinator_is_refused_on_coordinators_admins_and_themselves(
    w: World, target: str, action: str, data: dict[str, str]
) -> None:
    token = _sign_in(w, w.coord)
    victim = getattr(w, target)
    page = w.h.client.get(f"/admin/users/{victim.id}")
    assert page.status_code == 200 and not page.context["editable"]
    assert f'action="/admin/users/{victim.id}/disable"' not in page.text
    start = w.seq()
    _refused(_post(w, f"/admin/users/{victim.id}/{action}", token, **data), "forbidden", 403)
    [refused] = w.since(start)
    assert refused.type == "ConsoleRefused" and refused.subject_id == victim.id
    after = _user(w, victim.id)
    assert (after.status, after.training_date) == (UserStatus.ACTIVE, None)


# -- step-up before every change, and the change after it (CJIS IA-11), with before/after ------------
CHANGES: dict[str, tuple[Path, dict[str, str], Path, str, str]] = {
    # name: (path, form, page to come back to, audit event, done code)
    "unlock": (
        lambda w: f"/admin/users/{w.alice.id}/unlock",
        {},
        lambda w: f"/admin/users/{w.alice.id}",
        "AccountUnlocked",
        "unlocked",
    ),
    "disable": (
        lambda w: f"/admin/users/{w.alice.id}/disable",
        {},
        lambda w: f"/admin/users/{w.alice.id}",
        "AccountDisabled",
        "disabled",
    ),
    "enable": (
        lambda w: f"/admin/users/{w.alice.id}/enable",
        {},
        lambda w: f"/admin/users/{w.alice.id}",
        "AccountEnabled",
        "enabled",
    ),
    "reset-methods": (
        lambda w: f"/admin/users/{w.alice.id}/reset-methods",
        {"note": NOTE},
        lambda w: f"/admin/users/{w.alice.id}",
        "MethodsReset",
        "methods_reset",
    ),
    "activation-link": (
        lambda w: f"/admin/users/{w.waiting_a.id}/activation-link",
        {},
        lambda w: f"/admin/users/{w.waiting_a.id}",
        "ActivationLinkIssued",
        "link_sent",
    ),
    "training": (
        lambda w: f"/admin/users/{w.alice.id}/training",
        {"training_date": "2025-12-01"},
        lambda w: f"/admin/users/{w.alice.id}",
        "TrainingUpdated",
        "training_updated",
    ),
    "end-sessions": (
        lambda w: f"/admin/users/{w.alice.id}/end-sessions",
        {},
        lambda w: f"/admin/users/{w.alice.id}",
        "SessionsEnded",
        "sessions_ended",
    ),
    "approve": (
        lambda w: f"/admin/requests/{w.reg_a.id}/approve",
        {},
        lambda w: f"/admin/requests/{w.reg_a.id}",
        "RegistrationApproved",
        "approved",
    ),
    "deny": (
        lambda w: f"/admin/requests/{w.reg_a.id}/deny",
        {"reason": "Not on our staff"},
        lambda w: f"/admin/requests/{w.reg_a.id}",
        "RegistrationDenied",
        "denied",
    ),
    "role": (
        lambda w: f"/admin/users/{w.alice.id}/role",
        {"role": "coordinator"},
        lambda w: f"/admin/users/{w.alice.id}",
        "RoleChanged",
        "role_changed",
    ),
    "create-agency": (
        lambda w: "/admin/agencies",
        {"ori": "al0030000", "name": "Third County Sheriff", "email_domains": "third.al.gov\nsheriff.al.gov"},
        lambda w: "/admin/agencies",
        "AgencyCreated",
        "agency_created",
    ),
    "update-agency": (
        lambda w: f"/admin/agencies/{w.b.id}",
        {"ori": ORI_B, "name": "Baldwin County Sheriff", "email_domains": "bcso.al.gov"},
        lambda w: f"/admin/agencies/{w.b.id}",
        "AgencyUpdated",
        "agency_updated",
    ),
    "coordinators": (
        lambda w: f"/admin/agencies/{w.a.id}/coordinators",
        {"coordinators": "coord01"},
        lambda w: f"/admin/agencies/{w.a.id}",
        "CoordinatorsChanged",
        "coordinators_changed",
    ),
}
ADMIN_ONLY = {"role", "create-agency", "update-agency", "coordinators"}


def _prepare(w: World, name: str) -> None:
    """Put alice01 in the state the change acts on: locked, disabled, or signed in elsewhere."""
    deps = w.h.portal.deps
    if name == "enable":
        w.h.run(Directory(deps).set_status, "alice01", UserStatus.DISABLED, CTX)

    async def lock() -> None:
        now = w.h.clock.now()
        async with deps.store.transaction() as tx:
            await tx.throttles.put(Throttle("alice01@alacop.gov", (now,) * 5, now))

    async def signed_in_elsewhere() -> None:
        async with deps.store.transaction() as tx:
            await open_session(tx, w.alice, CTX, w.h.clock.now(), deps.policy, aal="aal2", amr=("pwd", "otp"))

    if name == "unlock":
        w.h.run(lock)
    if name == "end-sessions":
        w.h.run(signed_in_elsewhere)


@pytest.mark.parametrize(
    ("who", "name"),
    [("coord", n) for n in sorted(set(CHANGES) - ADMIN_ONLY)] + [("admin", n) for n in sorted(CHANGES)],
)
def test_every_change_asks_for_step_up_then_works_and_records_before_and_after(w: World, who: str, name: str) -> None:
    path, form, back, event, done = CHANGES[name]
    _prepare(w, name)
    actor = getattr(w, who)
    token = _sign_in(w, actor)
    w.h.clock.advance(timedelta(minutes=11))
    before = len(w.h.events(event))
    # 1. Too long since sign-in: off to re-authenticate, and nothing changes.
    asked = _post(w, path(w), token, **form)
    assert _location(asked) == f"/account/reauth?next={back(w)}"
    assert len(w.h.events(event)) == before
    # 2. The password again; back to the console page.
    page = w.h.client.get(_location(asked))
    assert page.template.name == "account/reauth.html" and page.context["next"] == back(w)
    confirmed = _post(w, "/account/reauth", page.context["csrf_token"], password=STRONG, next=back(w))
    assert _location(confirmed) == f"{back(w)}?done=reauthenticated"
    assert w.h.client.get(_location(confirmed)).context["message_ids"] == ["reauthenticated"]
    # 3. The same change now goes through, and its record says what it was and what it became.
    changed = _post(w, path(w), token, **form)
    assert _location(changed) == f"{back(w)}?done={done}"
    records = w.h.events(event)
    assert len(records) == before + 1
    record = records[-1]
    assert record.actor_id == actor.id
    details = audit_details(record)
    assert "before" in details and "after" in details
    assert details["before"] != details["after"]
    shown = w.h.client.get(_location(changed))
    assert shown.status_code == 200 and shown.context["message_ids"] == [done]


def test_changes_take_effect(w: World) -> None:
    token = _sign_in(w, w.admin)
    assert _location(_post(w, f"/admin/users/{w.alice.id}/training", token, training_date="2025-11-30"))
    assert _location(_post(w, f"/admin/users/{w.alice.id}/disable", token))
    assert _location(_post(w, f"/admin/users/{w.alice.id}/role", token, role="coordinator"))
    alice = _user(w, w.alice.id)
    assert (alice.status, alice.role, str(alice.training_date)) == (UserStatus.DISABLED, "coordinator", "2025-11-30")
    assert _location(_post(w, f"/admin/agencies/{w.a.id}/coordinators", token, coordinators="coord01, alice01"))
    page = w.h.client.get(f"/admin/agencies/{w.a.id}")
    assert [u.username for u in page.context["shown"].coordinators] == ["alice01", "coord01"]
    created = _post(w, "/admin/agencies", token, ori="AL0030000", name="Third County", email_domains="third.gov")
    assert _location(created) == "/admin/agencies?done=agency_created"
    assert "AL0030000" in [v.agency.ori for v in w.h.client.get("/admin/agencies").context["listed"]]


def test_reset_methods_makes_the_user_enrol_again(w: World) -> None:
    token = _sign_in(w, w.coord)
    assert _location(_post(w, f"/admin/users/{w.alice.id}/reset-methods", token, note=NOTE))
    page = w.h.client.get(f"/admin/users/{w.alice.id}")
    assert page.context["shown"].methods == () and page.context["shown"].recovery_codes_left == 0
    w.h.client.cookies.clear()
    enrol = w.h.password(w.h.identifier("alice01"), STRONG)
    assert enrol.template.name == "login/enroll.html"


# -- CSRF ---------------------------------------------------------------------------------------------
@sqlite_only
@pytest.mark.parametrize("name", sorted(CHANGES))
@pytest.mark.parametrize("token", [None, "0" * 64], ids=["missing", "wrong"])
def test_a_change_without_the_form_token_is_refused(w: World, name: str, token: str | None) -> None:
    path, form, _, event, _ = CHANGES[name]
    _prepare(w, name)
    _sign_in(w, w.admin)
    before = len(w.h.events(event))
    # A browser's form post always has a body; "go" stands in for the submit button.
    _refused(_post(w, path(w), token, go="1", **form), "csrf_failed", 403)
    assert len(w.h.events(event)) == before
    assert w.h.events("RequestRefused")[-1].reason == "csrf_failed"


def test_an_export_without_the_form_token_is_refused(w: World) -> None:
    _sign_in(w, w.admin)
    _refused(_post(w, "/admin/audit/export", None, format="csv"), "csrf_failed", 403)
    assert w.h.events("AuditExported") == []


# -- bad input: 4xx pages, never a 500, never a change ---------------------------------------------------
def test_unknown_and_malformed_ids_are_not_found(w: World) -> None:
    token = _sign_in(w, w.admin)
    unknown = str(uuid.uuid4())
    for path in (
        f"/admin/users/{unknown}",
        "/admin/users/not-an-id",
        "/admin/users/%00",
        "/admin/users/..%2F..%2Fetc",
        f"/admin/requests/{unknown}",
        "/admin/requests/1",
        f"/admin/agencies/{unknown}",
        "/admin/agencies/AL0010000",
    ):
        response = w.h.client.get(path)
        assert response.status_code == 404, path
    for path in (f"/admin/users/{unknown}/disable", "/admin/users/x/unlock", f"/admin/requests/{unknown}/approve"):
        assert _post(w, path, token).status_code == 404, path


@sqlite_only
@pytest.mark.parametrize(
    ("path", "form", "code", "status"),
    [
        (lambda w: f"/admin/users/{w.alice.id}/training", {"training_date": "2025-13-45"}, "invalid_date", 400),
        (lambda w: f"/admin/users/{w.alice.id}/training", {"training_date": "12/01/2025"}, "invalid_date", 400),
        (lambda w: f"/admin/users/{w.alice.id}/training", {"training_date": ""}, "invalid_date", 400),
        (lambda w: f"/admin/users/{w.alice.id}/training", {"training_date": "2026-01-06"}, "training_in_future", 400),
        (lambda w: f"/admin/users/{w.alice.id}/reset-methods", {"note": "  "}, "note_required", 400),
        (lambda w: f"/admin/users/{w.alice.id}/reset-methods", {"note": "a\x00b"}, "note_required", 400),
        (lambda w: f"/admin/users/{w.alice.id}/role", {"role": "root"}, "invalid_role", 400),
        (lambda w: f"/admin/users/{w.alice.id}/enable", {}, "already_active", 409),
        (lambda w: f"/admin/users/{w.alice.id}/activation-link", {}, "already_activated", 409),
        (lambda w: f"/admin/requests/{w.reg_a.id}/deny", {"reason": ""}, "reason_required", 400),
        (lambda w: "/admin/agencies", {"ori": "A1", "name": "Bad", "email_domains": ""}, "invalid_ori", 400),
        (lambda w: "/admin/agencies", {"ori": ORI_A, "name": "Again", "email_domains": ""}, "agency_exists", 409),
        (
            lambda w: f"/admin/agencies/{w.b.id}",
            {"ori": ORI_B, "name": "B", "email_domains": "x y!"},
            "invalid_domain",
            400,
        ),
        (lambda w: f"/admin/agencies/{w.a.id}/coordinators", {"coordinators": "alice01"}, "not_coordinator", 400),
    ],
)
def test_bad_input_shows_the_page_again_with_the_reason(
    w: World, path: Path, form: dict[str, str], code: str, status: int
) -> None:
    token = _sign_in(w, w.admin)
    start = w.seq()
    response = _post(w, path(w), token, **form)
    assert response.status_code == status
    assert response.template.name.startswith("admin/")
    assert response.context["message_ids"] == [code]
    assert f'data-message-id="{code}"' in response.text
    assert w.since(start) == []
    assert _user(w, w.alice.id).training_date is None


def test_oversized_and_malformed_forms_are_refused(w: World) -> None:
    token = _sign_in(w, w.admin)
    path = f"/admin/users/{w.alice.id}/reset-methods"
    assert _post(w, path, token, note="x" * 3000).status_code == 400
    too_big = w.h.client.post(path, data={"csrf_token": token, "note": "x" * 2_000_000}, follow_redirects=False)
    assert too_big.status_code == 413
    wrong_type = w.h.client.post(path, content=b"{}", headers={"content-type": "application/json"})
    assert wrong_type.status_code == 400
    assert w.h.events("MethodsReset") == []


def test_bad_search_filters_are_4xx_pages(w: World) -> None:
    token = _sign_in(w, w.admin)
    for path in (
        "/admin/users?status=gone",
        "/admin/users?role=root",
        "/admin/users?agency=nope",
        "/admin/users?q=" + "x" * 150,
        "/admin/audit?since=yesterday",
        "/admin/audit?type=NoSuchEvent",
        "/admin/audit?since=2026-01-05&until=2026-01-01",
        "/admin/audit?user=%00",
        "/admin/audit?until=9999-12-31",
        "/admin/audit?since=0001-01-01T00:00&until=9999-12-31",
    ):
        response = w.h.client.get(path)
        assert response.status_code == 400, path
        assert response.context["message_ids"], path
    assert _post(w, "/admin/audit/export", token, format="xlsx").status_code == 400
    assert _post(w, "/admin/audit/export", token, format="csv", since="soon").status_code == 400
    assert _post(w, "/admin/audit/export", token, format="csv", until="9999-12-31").status_code == 400
    assert w.h.events("AuditExported") == []


# -- the pages ---------------------------------------------------------------------------------------
def test_user_search_shows_only_the_coordinators_agencies(w: World) -> None:
    _sign_in(w, w.coord)
    page = w.h.client.get("/admin/users")
    names = [u.username for u, _ in page.context["found"]]
    assert "alice01" in names and "bob01" not in names and w.waiting_b.username not in names
    assert [a.ori for a in page.context["agencies"]] == [ORI_A]
    filtered = w.h.client.get("/admin/users", params={"q": "alic", "status": "active", "role": "user"})
    assert [u.username for u, _ in filtered.context["found"]] == ["alice01"]
    assert f'href="/admin/users/{w.alice.id}"' in filtered.text


def test_the_user_page_shows_status_agency_methods_training_sessions_and_activation(w: World) -> None:
    w.h.sign_in("alice01")
    _sign_in(w, w.coord)
    page = w.h.client.get(f"/admin/users/{w.alice.id}")
    assert page.template.name == "admin/user.html" and page.context["editable"]
    text = page.text
    assert 'data-fact="status">active' in text and "Activated" in text and ORI_A in text
    assert "Authenticator app: Test phone" in text and "10 of 10 recovery codes unused" in text
    assert 'data-fact="training">not recorded' in text
    assert len(page.context["shown"].sessions) == 1
    waiting = w.h.client.get(f"/admin/users/{w.waiting_a.id}").text
    assert "Awaiting activation" in waiting and 'action="/admin/users/' in waiting
    assert f'action="/admin/users/{w.waiting_a.id}/activation-link"' in waiting
    assert f'action="/admin/users/{w.alice.id}/activation-link"' not in text


def test_requests_show_the_agencys_pending_requests_with_every_field(w: World) -> None:
    _sign_in(w, w.coord)
    queue = w.h.client.get("/admin/requests")
    assert [r.id for r, _ in queue.context["queue"]] == [w.reg_a.id]
    page = w.h.client.get(f"/admin/requests/{w.reg_a.id}")
    app = w.reg_a.application
    for value in (app.first_name, app.last_name, app.title, app.email, app.supervisor, app.reason, ORI_A):
        assert value in page.text, value
    assert app.training_date.isoformat() in page.text and app.phone in page.text
    assert f'action="/admin/requests/{w.reg_a.id}/approve"' in page.text


def test_the_policy_page_shows_the_values_in_force(w: World) -> None:
    _sign_in(w, w.admin)
    page = w.h.client.get("/admin/policy")
    assert page.status_code == 200
    rows = {name: value for name, value, _ in page.context["rows"]}
    assert rows["lockout_threshold"] == 5 and rows["reauth_minutes"] == 10
    assert 'data-setting="session_idle_minutes"' in page.text and "CJIS AC-7" in page.text


def test_the_pages_keep_to_the_content_security_policy(w: World) -> None:
    _sign_in(w, w.admin)
    for path in ("/admin/users", f"/admin/users/{w.alice.id}", "/admin/requests", "/admin/audit", "/admin/agencies"):
        page = w.h.client.get(path)
        assert page.status_code == 200, path
        assert " style=" not in page.text and "<script>" not in page.text, path
        assert "unsafe-inline" not in page.headers["content-security-policy"]


# -- the audit trail ------------------------------------------------------------------------------------
def test_audit_search_is_scoped_for_coordinators(w: World) -> None:
    _sign_in(w, w.coord)
    page = w.h.client.get("/admin/audit")
    agencies = {r.agency_id for r in page.context["page"].records}
    assert agencies == {w.a.id}
    mine = w.h.client.get("/admin/audit", params={"user": "alice01", "type": "AccountCreated"})
    [created] = mine.context["page"].records
    assert created.subject_id == w.alice.id
    _sign_in(w, w.admin)
    everything = w.h.client.get("/admin/audit", params={"type": "AccountCreated"})
    assert {w.a.id, w.b.id} <= {r.agency_id for r in everything.context["page"].records}
    searched = w.h.events("AuditSearched")
    assert audit_details(searched[1])["filter"]["user"] == "alice01" and searched[1].actor_id == w.coord.id


def test_exports_download_csv_and_json_lines_with_the_injection_guard(w: World) -> None:
    token = _sign_in(w, w.coord)
    evil = '=HYPERLINK("http://evil.example","x")'
    w.h.client.post(
        f"/admin/users/{w.alice.id}/training",
        data={"csrf_token": token, "training_date": "2025-12-01"},
        headers={"user-agent": evil},
    )
    wanted = {"type": "TrainingUpdated", "user": "", "agency": "", "outcome": "", "since": "", "until": ""}
    table = _post(w, "/admin/audit/export", token, format="csv", **wanted)
    assert table.status_code == 200
    assert table.headers["content-type"] == "text/csv; charset=utf-8"
    assert table.headers["content-disposition"].startswith('attachment; filename="alacop-audit-')
    assert table.headers["cache-control"] == "no-store"
    [row] = list(csv.DictReader(io.StringIO(table.text)))
    assert row["user_agent"] == "'" + evil
    assert row["type"] == "TrainingUpdated" and row["subject_id"] == w.alice.id
    assert json.loads(row["details"])["after"] == {"training_date": "2025-12-01"}
    lines = _post(w, "/admin/audit/export", token, format="jsonl", **wanted)
    assert lines.headers["content-type"] == "application/x-ndjson"
    [record] = [json.loads(line) for line in lines.text.splitlines()]
    assert record["user_agent"] == evil and record["details"]["before"] == {"training_date": None}
    exported = w.h.events("AuditExported")
    assert [(audit_details(e)["format"], audit_details(e)["count"]) for e in exported] == [("csv", 1), ("jsonl", 1)]
    assert audit_details(exported[0])["filter"]["type"] == "TrainingUpdated"


def test_a_coordinators_export_holds_only_their_agencies(w: World) -> None:
    token = _sign_in(w, w.coord)
    body = _post(w, "/admin/audit/export", token, format="jsonl").text
    assert {json.loads(line)["agency_id"] for line in body.splitlines()} == {w.a.id}


def test_chain_status_is_shown_and_turns_broken_after_tampering(w: World) -> None:
    _sign_in(w, w.coord)
    assert 'data-chain="unknown"' in w.h.client.get("/admin/audit").text
    check = w.h.client.get("/admin/audit/verify")
    assert check.status_code == 200 and 'data-chain="intact"' in check.text
    assert check.context["result"].ok
    assert 'data-chain="intact"' in w.h.client.get("/admin/audit").text
    tamper(w, "UPDATE audit_events SET reason = 'edited' WHERE seq = 2")
    check = w.h.client.get("/admin/audit/verify")
    assert 'data-chain="broken"' in check.text and "at record 2" in check.text
    assert 'data-chain="broken"' in w.h.client.get("/admin/audit").text
    verified = w.h.events("AuditVerified")
    assert [(e.outcome, e.actor_id) for e in verified] == [("success", w.coord.id), ("failure", w.coord.id)]


# -- re-authentication's return path --------------------------------------------------------------------
@sqlite_only
@pytest.mark.parametrize(
    "nxt",
    [
        "https://evil.example/admin",
        "//evil.example",
        "/admin/../account",
        "/admin//evil.example",
        "/admin/users?x=1",
        "/admin/USERS",
        "/administrator",
        "/admin/users/\\evil",
    ],
)
def test_reauth_returns_only_to_console_paths(w: World, nxt: str) -> None:
    _sign_in(w, w.admin)
    page = w.h.client.get("/account/reauth", params={"next": nxt})
    assert page.context["next"] == "/account/security"
    done = _post(w, "/account/reauth", page.context["csrf_token"], password=STRONG, next=nxt)
    assert _location(done) == "/account/security?done=reauthenticated"


def test_reauth_returns_to_a_console_page(w: World) -> None:
    _sign_in(w, w.admin)
    target = f"/admin/users/{w.alice.id}"
    page = w.h.client.get("/account/reauth", params={"next": target})
    done = _post(w, "/account/reauth", page.context["csrf_token"], password=STRONG, next=target)
    assert _location(done) == f"{target}?done=reauthenticated"
