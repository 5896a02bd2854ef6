"""The registry of authorized applications: exact URIs, secrets shown once and stored hashed, admins only."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from alacop.core.accounts import Role
from alacop.core.applications import Applications, NewApplication
from alacop.core.authz import Actor
from alacop.core.context import RequestContext
from alacop.core.errors import Conflict, Forbidden, InvalidInput, NotFound, StepUpRequired
from alacop.core.oidc import ClientType, client_secret_hash, client_secret_matches
from tests.conftest import Harness, audit_details

CTX = RequestContext.system("test")
ADMIN = Actor.operator()
RECORDS = NewApplication(
    name="Records Search",
    redirect_uris=["https://records.example/callback"],
    post_logout_redirect_uris=["https://records.example/"],
    initiate_login_uri="https://records.example/login",
    logo_url="https://records.example/logo.png",
)


def _apps(h: Harness) -> Applications:
    return Applications(h.portal.deps)


def _create(h: Harness, new: NewApplication = RECORDS, actor: Actor = ADMIN) -> Any:
    return h.run(_apps(h).create, actor, new, CTX)


def test_a_confidential_application_gets_a_secret_shown_once_and_stored_hashed(harness: Harness) -> None:
    client, secret = _create(harness)
    assert secret and len(secret) >= 43
    assert client.client_type is ClientType.CONFIDENTIAL
    assert client.secret_hash == client_secret_hash(harness.portal.deps.pepper, secret) != secret
    assert client_secret_matches(client, harness.portal.deps.pepper, secret)
    assert not client_secret_matches(client, harness.portal.deps.pepper, secret + "x")
    (created,) = harness.events("ClientCreated")
    details = audit_details(created)
    assert details["before"] is None and details["after"]["redirect_uris"] == ["https://records.example/callback"]
    assert secret not in json.dumps(details) and client.secret_hash not in created.details


def test_a_public_application_has_no_secret(harness: Harness) -> None:
    client, secret = _create(harness, replace(RECORDS, public=True))
    assert secret is None and client.secret_hash is None and client.public
    with pytest.raises(Conflict):
        harness.run(_apps(harness).rotate_secret, ADMIN, client.client_id, CTX)


@pytest.mark.parametrize(
    "uri",
    [
        "https://*.example/cb",
        "https://records.example/cb#frag",
        "http://records.example/cb",
        "records.example/cb",
        "https://user:pw@records.example/cb",
        "javascript:alert(1)",
        "https://records.example/c b",
        "",
    ],
)
def test_redirect_uris_are_exact_https_or_loopback(harness: Harness, uri: str) -> None:
    with pytest.raises(InvalidInput):
        _create(harness, replace(RECORDS, redirect_uris=[uri]))
    assert harness.events("ClientCreated") == []


def test_loopback_http_is_allowed_for_development(harness: Harness) -> None:
    client, _ = _create(harness, replace(RECORDS, redirect_uris=["http://localhost:9000/cb", "http://127.0.0.1/cb"]))
    assert client.redirect_uris == ("http://localhost:9000/cb", "http://127.0.0.1/cb")


@pytest.mark.parametrize(
    "changes",
    [
        {"scopes": ["profile"]},
        {"scopes": ["openid", "admin"]},
        {"access_token_format": "paseto"},
        {"access_token_seconds": 30},
        {"refresh_token_seconds": 10**9},
        {"name": "<b>Records</b>"},
        {"redirect_uris": []},
    ],
)
def test_bad_settings_are_refused(harness: Harness, changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        _create(harness, replace(RECORDS, **changes))


def test_only_fresh_administrators_manage_applications(harness: Harness) -> None:
    coordinator = Actor(id="c", role=Role.COORDINATOR, agency_ids=frozenset({"a"}), fresh=True)
    stale_admin = Actor(id="a", role=Role.ADMIN, agency_ids=frozenset(), fresh=False)
    with pytest.raises(Forbidden):
        _create(harness, actor=coordinator)
    with pytest.raises(StepUpRequired):
        _create(harness, actor=stale_admin)
    client, _ = _create(harness)
    for action in (_apps(harness).disable, _apps(harness).rotate_secret):
        with pytest.raises(Forbidden):
            harness.run(action, coordinator, client.client_id, CTX)
    with pytest.raises(Forbidden):
        harness.run(_apps(harness).registered, coordinator)


def test_rotating_the_secret_retires_the_old_one(harness: Harness) -> None:
    client, old = _create(harness)
    rotated, new = harness.run(_apps(harness).rotate_secret, ADMIN, client.client_id, CTX)
    pepper = harness.portal.deps.pepper
    assert new != old
    assert client_secret_matches(rotated, pepper, new) and not client_secret_matches(rotated, pepper, old)
    details = audit_details(harness.events("ClientSecretRotated")[-1])
    assert details["before"] == {"secret_rotated_at": None}
    assert new not in json.dumps(details)


def test_disable_once_and_unknown_ids(harness: Harness) -> None:
    client, _ = _create(harness)
    disabled = harness.run(_apps(harness).disable, ADMIN, client.client_id, CTX)
    assert disabled.disabled_at is not None and not disabled.active
    with pytest.raises(Conflict):
        harness.run(_apps(harness).disable, ADMIN, client.client_id, CTX)
    with pytest.raises(NotFound):
        harness.run(_apps(harness).disable, ADMIN, "A" * 24, CTX)
    with pytest.raises(InvalidInput):
        harness.run(_apps(harness).disable, ADMIN, "x\x00", CTX)
    assert audit_details(harness.events("ClientDisabled")[-1])["after"] == {"disabled": True}


def test_my_applications_lists_enabled_allowed_applications_with_a_start_address(harness: Harness) -> None:
    user = harness.create_user()
    other = harness.create_user("jd0101", ori="AL0020000")
    records, _ = _create(harness)
    _create(harness, replace(RECORDS, name="No start page", initiate_login_uri=None))
    only_other, _ = _create(harness, replace(RECORDS, name="Other county only", agency_oris=["AL0020000"]))
    gone, _ = _create(harness, replace(RECORDS, name="Retired app"))
    harness.run(_apps(harness).disable, ADMIN, gone.client_id, CTX)
    assert [a.name for a in harness.run(_apps(harness).for_user, user)] == ["Records Search"]
    assert sorted(a.name for a in harness.run(_apps(harness).for_user, other)) == [
        "Other county only",
        "Records Search",
    ]
    with pytest.raises(NotFound):
        _create(harness, replace(RECORDS, agency_oris=["AL0099999"]))

    page = harness.sign_in()
    assert page.template.name == "apps.html"
    assert 'href="https://records.example/login"' in page.text and "Records Search" in page.text
    assert "Other county only" not in page.text and "Retired app" not in page.text
    assert f'data-client-id="{records.client_id}"' in page.text
    assert only_other.client_id not in page.text
