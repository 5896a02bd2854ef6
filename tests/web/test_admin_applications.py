"""The console's Applications section: administrators register, disable and re-key applications."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from alacop.core.oidc import client_secret_matches
from tests.conftest import Harness, audit_details
from tests.support.console import World, build_world


@pytest.fixture
def w(harness: Harness) -> World:
    return build_world(harness)


def _sign_in(w: World, username: str) -> str:
    w.h.client.cookies.clear()
    done = w.h.sign_in(username)
    assert done.url.path == "/apps", done.url
    return str(w.h.client.get("/apps").context["csrf_token"])


def _create(w: World, token: str, **changes: Any) -> Any:
    data = {
        "csrf_token": token,
        "name": "Records Search",
        "client_type": "confidential",
        "redirect_uris": "https://records.example/callback\nhttps://records.example/cb2",
        "post_logout_redirect_uris": "https://records.example/",
        "initiate_login_uri": "https://records.example/login",
        "scope": ["openid", "profile", "agency"],
        "access_token_format": "jwt",
        **changes,
    }
    return w.h.client.post("/admin/applications", data=data, follow_redirects=False)


def _clients(w: World) -> list[Any]:
    async def go() -> list[Any]:
        async with w.h.portal.deps.store.read() as db:
            return list(await db.clients.list())

    return w.h.run(go)


def test_an_admin_registers_an_application_and_sees_the_secret_once(w: World) -> None:
    token = _sign_in(w, w.admin.username)
    page = _create(w, token)
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    client_id, secret = page.context["shown_secret"]
    (client,) = _clients(w)
    assert client.client_id == client_id and client.scopes == ("openid", "profile", "agency")
    assert client.redirect_uris == ("https://records.example/callback", "https://records.example/cb2")
    assert client_secret_matches(client, w.h.portal.deps.pepper, secret)
    listed = w.h.client.get("/admin/applications")
    assert client_id in listed.text and secret not in listed.text
    # On My applications, for the users it serves.
    assert 'href="https://records.example/login"' in w.h.client.get("/apps").text
    assert audit_details(w.h.events("ClientCreated")[-1])["after"]["name"] == "Records Search"


def test_new_secret_and_disable(w: World) -> None:
    token = _sign_in(w, w.admin.username)
    first = _create(w, token).context["shown_secret"]
    rotated = w.h.client.post(f"/admin/applications/{first[0]}/rotate-secret", data={"csrf_token": token})
    assert rotated.status_code == 200 and rotated.context["shown_secret"][1] not in ("", first[1])
    (client,) = _clients(w)
    assert not client_secret_matches(client, w.h.portal.deps.pepper, first[1])
    done = w.h.client.post(f"/admin/applications/{first[0]}/disable", data={"csrf_token": token})
    assert done.status_code == 200 and "application_disabled" in done.context["message_ids"]
    assert _clients(w)[0].disabled_at is not None
    again = w.h.client.post(f"/admin/applications/{first[0]}/disable", data={"csrf_token": token})
    assert again.status_code == 409


@pytest.mark.parametrize(
    "changes",
    [
        {"redirect_uris": "https://*.example/cb"},
        {"redirect_uris": ""},
        {"name": ""},
        {"scope": ["profile"]},
        {"agencies": "AL0099999"},
        {"access_token_format": "xml"},
    ],
)
def test_bad_registrations_show_the_page_again(w: World, changes: dict[str, Any]) -> None:
    token = _sign_in(w, w.admin.username)
    page = _create(w, token, **changes)
    assert page.status_code in (400, 404) and page.template.name == "admin/applications.html"
    assert page.context["shown_secret"] is None and _clients(w) == []


def test_coordinators_and_stale_admins_are_refused(w: World) -> None:
    token = _sign_in(w, w.coord.username)
    assert w.h.client.get("/admin/applications").status_code == 403
    assert _create(w, token).status_code == 403
    assert w.h.events("ConsoleRefused")
    token = _sign_in(w, w.admin.username)
    w.h.clock.advance(timedelta(minutes=11))
    stale = _create(w, token)
    assert stale.status_code == 303 and stale.headers["location"].startswith("/account/reauth?next=/admin/applications")
    assert _clients(w) == []
    assert _create(w, "0" * 64).status_code == 403


@pytest.mark.parametrize("action", ["disable", "rotate-secret"])
def test_an_unknown_application_gets_the_page_with_a_message_not_an_error_page(w: World, action: str) -> None:
    token = _sign_in(w, w.admin.username)
    unknown = "A" * 24
    answer = w.h.client.post(f"/admin/applications/{unknown}/{action}", data={"csrf_token": token})
    assert answer.status_code == 404
    assert answer.template.name == "admin/applications.html"
    assert "client_not_found" in answer.context["message_ids"]
