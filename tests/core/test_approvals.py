"""The agency's side of registration: scope, decisions, usernames, activation links, expiry."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from alacop.core.accounts import Role
from alacop.core.authz import Actor
from alacop.core.errors import Conflict, Forbidden, InvalidInput, StepUpRequired
from alacop.core.registration import RegistrationStatus
from tests.conftest import Harness, audit_details
from tests.support.mail import find
from tests.support.registration import CTX, NEW_PASSWORD, Registering, registering


@pytest.fixture
def r(app_factory: Callable[..., Harness]) -> Registering:
    return registering(app_factory)


def _request(r: Registering, **changes: str) -> Any:
    r.register(**changes)
    return r.pending()[-1]


def _coordinator(r: Registering, agency_id: str, *, fresh: bool = True) -> Actor:
    return Actor(id=str(uuid.uuid4()), role=Role.COORDINATOR, agency_ids=frozenset({agency_id}), fresh=fresh)


def _other_agency(r: Registering) -> Any:
    from alacop.core.directory import Directory

    return r.h.run(Directory(r.h.portal.deps).create_agency, "AL0020000", "Baldwin County Sheriff", ["bcso.gov"], CTX)


def _status(r: Registering, registration_id: str) -> RegistrationStatus:
    async def go() -> RegistrationStatus:
        async with r.h.portal.deps.store.read() as db:
            found = await db.registrations.get(registration_id)
        assert found is not None
        return found.status

    return r.h.run(go)


def _token(r: Registering, address: str = "casey.smith@mpd.example.gov") -> str:
    return find(r"/activate\?token=([A-Za-z0-9_-]+)", r.mail.last(address).body)


# -- who may decide -----------------------------------------------------------------------------------
def test_coordinator_of_the_agency_approves(r: Registering) -> None:
    request = _request(r)
    coordinator = _coordinator(r, r.agency.id)
    assert [q.id for q in r.h.run(r.h.portal.approvals.queue, coordinator)] == [request.id]
    user = r.approve(request.id, coordinator)
    (approved,) = r.h.events("RegistrationApproved")
    assert approved.actor_id == coordinator.id and approved.subject_id == user.id
    details = audit_details(approved)
    assert details["before"] == {"status": "pending"}
    assert details["after"] == {"status": "approved", "username": "cs0101"}
    created = audit_details(r.h.events("AccountCreated")[-1])["after"]
    assert (
        created["agency"] == "AL0030100" and created["training_date"] == request.application.training_date.isoformat()
    )


@pytest.mark.parametrize("action", ["get", "approve", "deny"])
def test_coordinator_of_another_agency_is_refused_everything(r: Registering, action: str) -> None:
    request = _request(r)
    outsider = _coordinator(r, _other_agency(r).id)
    assert r.h.run(r.h.portal.approvals.queue, outsider) == []
    approvals = r.h.portal.approvals
    with pytest.raises(Forbidden):
        if action == "get":
            r.h.run(approvals.get, outsider, request.id)
        elif action == "approve":
            r.approve(request.id, outsider)
        else:
            r.h.run(approvals.deny, outsider, request.id, "no", CTX)
    assert _status(r, request.id) is RegistrationStatus.PENDING


def test_users_cannot_decide_and_stale_sign_ins_must_step_up(r: Registering) -> None:
    request = _request(r)
    plain = Actor(id="u", role=Role.USER, agency_ids=frozenset({r.agency.id}), fresh=True)
    with pytest.raises(Forbidden):
        r.h.run(r.h.portal.approvals.queue, plain)
    with pytest.raises(Forbidden):
        r.approve(request.id, plain)
    with pytest.raises(StepUpRequired):
        r.approve(request.id, _coordinator(r, r.agency.id, fresh=False))
    # Reading the queue needs no step-up.
    assert r.h.run(r.h.portal.approvals.queue, _coordinator(r, r.agency.id, fresh=False))
    assert _status(r, request.id) is RegistrationStatus.PENDING


# -- decisions ----------------------------------------------------------------------------------------
def test_denial_needs_a_reason_and_tells_the_applicant(r: Registering) -> None:
    request = _request(r)
    for bad in ("   ", "no\x00", "x" * 501):
        with pytest.raises(InvalidInput):
            r.h.run(r.h.portal.approvals.deny, r.admin(), request.id, bad, CTX)
    r.h.run(r.h.portal.approvals.deny, r.admin(), request.id, "Not employed by this agency.", CTX)
    assert _status(r, request.id) is RegistrationStatus.DENIED
    mail = r.mail.last("casey.smith@mpd.example.gov")
    assert "not approved" in mail.subject and "Not employed by this agency." in mail.body
    details = audit_details(r.h.events("RegistrationDenied")[-1])
    assert details["after"] == {"status": "denied", "reason": "Not employed by this agency."}
    assert r.h.user("cs0101") is None
    # Decided once: neither a second denial nor an approval follows.
    with pytest.raises(Conflict):
        r.approve(request.id)


def test_approve_twice_is_refused(r: Registering) -> None:
    request = _request(r)
    r.approve(request.id)
    with pytest.raises(Conflict):
        r.approve(request.id)
    assert len(r.h.events("RegistrationApproved")) == 1


def test_an_expired_request_cannot_be_approved_and_maintenance_closes_it(r: Registering) -> None:
    request = _request(r)
    r.h.clock.advance(timedelta(days=30))
    with pytest.raises(Conflict):
        r.approve(request.id)
    assert r.h.run(r.h.portal.approvals.expire_stale, CTX) == 1
    assert r.h.run(r.h.portal.approvals.expire_stale, CTX) == 0
    assert _status(r, request.id) is RegistrationStatus.EXPIRED
    assert "expired" in r.mail.last("casey.smith@mpd.example.gov").subject
    assert audit_details(r.h.events("RegistrationExpired")[-1])["after"] == {"status": "expired"}


def test_the_status_page_follows_the_decision(r: Registering) -> None:
    done = r.register()
    link = done.context["status_token"]
    (request,) = r.pending()
    r.h.run(r.h.portal.approvals.deny, r.admin(), request.id, "Training record not found.", CTX)
    page = r.h.client.get(f"/register/status?t={link}")
    assert 'data-status="denied"' in page.text and "Training record not found." in page.text
    assert r.h.client.get("/register/status?t=not-a-real-link").status_code == 404
    assert r.h.client.get("/register/status").status_code == 404


# -- usernames (CJIS IA-4) ----------------------------------------------------------------------------
def test_usernames_are_initials_and_digits_unique_and_not_reused_within_a_year(r: Registering) -> None:
    first = r.approve(_request(r).id)
    second = r.approve(_request(r, email="c.smith2@mpd.example.gov").id)
    assert (first.username, second.username) == ("cs0101", "cs0102")
    accented = r.approve(_request(r, email="zoe@mpd.example.gov", first_name="Zoë", last_name="Ó Briain").id)
    assert accented.username == "zo0101"

    async def delete(user_id: str) -> None:
        async with r.h.portal.deps.store.transaction() as tx:
            await tx.users.delete(user_id, r.h.clock.now())

    r.h.run(delete, first.id)
    third = r.approve(_request(r, email="c.smith3@mpd.example.gov").id)
    assert third.username == "cs0103", "a deleted username is not given out again within a year"
    r.h.clock.advance(timedelta(days=366))
    fourth = r.approve(_request(r, email="c.smith4@mpd.example.gov").id)
    assert fourth.username == "cs0101"


# -- activation links ---------------------------------------------------------------------------------
def _activate(r: Registering, token: str, password: str = NEW_PASSWORD, confirm: str | None = None) -> Any:
    page = r.h.client.get(f"/activate?token={token}")
    csrf = page.context["csrf_token"] if page.status_code == 200 else "x"
    return r.h.client.post(
        f"/activate?token={token}",
        data={"csrf_token": csrf, "new_password": password, "confirm_password": confirm or password},
    )


def test_activation_link_expires_after_72_hours(r: Registering) -> None:
    r.approve(_request(r).id)
    token = _token(r)
    r.h.clock.advance(timedelta(hours=72))
    page = r.h.client.get(f"/activate?token={token}")
    assert page.status_code == 410 and 'data-error-code="activation_refused"' in page.text
    assert r.h.events("ActivationFailed")
    user = r.h.user("cs0101")
    assert user is not None and user.awaiting_activation


def test_a_new_link_replaces_the_old_one_and_is_scoped(r: Registering) -> None:
    user = r.approve(_request(r).id)
    old = _token(r)
    outsider = _coordinator(r, _other_agency(r).id)
    with pytest.raises(Forbidden):
        r.h.run(r.h.portal.approvals.issue_link, outsider, user.id, CTX)
    r.h.run(r.h.portal.approvals.issue_link, _coordinator(r, r.agency.id), user.id, CTX)
    new = _token(r)
    assert new != old
    assert r.h.client.get(f"/activate?token={old}").status_code == 410
    assert _activate(r, new).status_code == 200
    with pytest.raises(Conflict):
        r.h.run(r.h.portal.approvals.issue_link, r.admin(), user.id, CTX)
    assert [audit_details(e)["expires_at"] for e in r.h.events("ActivationLinkIssued")]


def test_a_refused_password_keeps_the_link_usable(r: Registering) -> None:
    r.approve(_request(r).id)
    token = _token(r)
    for password, confirm, problem in (
        ("short", None, "password_too_short"),
        (NEW_PASSWORD, NEW_PASSWORD + "x", "password_mismatch"),
        ("cs0101 is my name ok", None, "password_contains_username"),
    ):
        page = _activate(r, token, password, confirm)
        assert page.status_code == 200 and page.template.name == "register/activate.html"
        assert problem in page.context["message_ids"]
    done = _activate(r, token)
    assert done.template.name == "login/enroll.html"


def test_activation_without_csrf_is_refused(r: Registering) -> None:
    r.approve(_request(r).id)
    token = _token(r)
    refused = r.h.client.post(
        f"/activate?token={token}", data={"new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}
    )
    assert refused.status_code == 403
    user = r.h.user("cs0101")
    assert user is not None and user.awaiting_activation


def test_a_disabled_account_cannot_be_activated(r: Registering) -> None:
    user = r.approve(_request(r).id)
    token = _token(r)

    async def disable() -> None:
        async with r.h.portal.deps.store.transaction() as tx:
            stored = await tx.users.get(user.id)
            assert stored is not None
            await tx.users.update(replace(stored, status="disabled"))  # type: ignore[arg-type]

    r.h.run(disable)
    assert r.h.client.get(f"/activate?token={token}").status_code == 410


def test_training_that_lapsed_while_pending_blocks_approval(r: Registering) -> None:
    request = _request(r, training_date=(r.h.clock.now().date() - timedelta(days=360)).isoformat())
    r.h.clock.advance(timedelta(days=6))
    with pytest.raises(Conflict) as refused:
        r.approve(request.id)
    assert refused.value.code == "training_lapsed"
    assert _status(r, request.id) is RegistrationStatus.PENDING
    assert r.h.user("cs0101") is None


def test_a_domain_the_agency_dropped_blocks_approval(r: Registering) -> None:
    request = _request(r)

    async def drop() -> None:
        async with r.h.portal.deps.store.transaction() as tx:
            await tx.agencies.update(replace(r.agency, email_domains=("other.example.gov",)))

    r.h.run(drop)
    with pytest.raises(Conflict) as refused:
        r.approve(request.id)
    assert refused.value.code == "email_domain_refused"


def test_a_retired_username_cannot_be_created_by_hand_either(r: Registering) -> None:
    from alacop.core.directory import Directory

    user = r.approve(_request(r).id)
    directory = Directory(r.h.portal.deps)
    r.h.run(directory.delete_user, user.username, CTX)

    async def recreate() -> Any:
        return await directory.create_user(
            "cs0101",
            agency_ori="AL0030100",
            email="x@mpd.example.gov",
            name="X",
            role=Role.USER,
            password=None,
            ctx=CTX,
        )

    with pytest.raises(Conflict) as refused:
        r.h.run(recreate)
    assert refused.value.code == "username_retired"
    r.h.clock.advance(timedelta(days=366))
    assert r.h.run(recreate)[0].username == "cs0101"


def test_activation_link_events_say_what_changed(r: Registering) -> None:
    user = r.approve(_request(r).id)
    r.h.run(r.h.portal.approvals.issue_link, r.admin(), user.id, CTX)
    first, second = (audit_details(e) for e in r.h.events("ActivationLinkIssued"))
    assert first["before"] is None and first["after"]["activation_link"].startswith("until ")
    assert second["before"] == {"activation_link": "unused link, now void"}
