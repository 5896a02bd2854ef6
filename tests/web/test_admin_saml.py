"""The console's SAML applications: administrators register them from metadata and disable them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from markupsafe import escape

from alacop.core.saml import ATTRIBUTES, NameIdFormat, ServiceProvider
from tests.conftest import Harness, audit_details
from tests.support.console import World, build_world
from tests.support.saml import ACS, ACS_2, SP_ENTITY, posted, sp_keys, sp_metadata

PAGE = "/admin/applications/saml"
TEMPLATE = "admin/saml_applications.html"


@pytest.fixture
def w(harness: Harness) -> World:
    return build_world(harness)


def _sign_in(w: World, username: str) -> str:
    w.h.client.cookies.clear()
    done = w.h.sign_in(username)
    assert done.url.path == "/apps", done.url
    return str(w.h.client.get("/apps").context["csrf_token"])


def _form(token: str, **changes: Any) -> dict[str, Any]:
    return {
        "csrf_token": token,
        "name": "Records Search",
        "metadata": sp_metadata().decode(),
        "nameid": "persistent",
        "attribute": list(ATTRIBUTES),
        "relay_state": "",
        "start_url": "",
        "logo_url": "",
        "agencies": "",
        **changes,
    }


def _create(w: World, token: str, **changes: Any) -> Any:
    return w.h.client.post(PAGE, data=_form(token, **changes), follow_redirects=False)


def _sps(w: World) -> list[ServiceProvider]:
    async def go() -> list[ServiceProvider]:
        async with w.h.portal.deps.store.read() as db:
            return list(await db.saml_sps.list())

    return w.h.run(go)


def test_an_admin_registers_a_saml_application_and_sees_it_listed(w: World) -> None:
    token = _sign_in(w, w.admin.username)
    metadata = sp_metadata(acs=(ACS, ACS_2), keys=sp_keys(), signed_requests=True).decode()
    done = _create(
        w,
        token,
        metadata=metadata,
        nameid="email",
        attribute=["username", "email", "agencyOri"],
        idp_initiated="yes",
        relay_state="/records/home",
        agencies=w.a.ori,
    )
    assert done.status_code == 303 and done.headers["location"] == f"{PAGE}?done=saml_application_added"
    (sp,) = _sps(w)
    assert (sp.name, sp.entity_id, sp.nameid_format) == ("Records Search", SP_ENTITY, NameIdFormat.EMAIL)
    assert [a.url for a in sp.acs] == [ACS, ACS_2] and sp.authn_requests_signed and len(sp.certificates) == 1
    assert sp.attributes == ("username", "email", "agencyOri") and sp.agency_ids == (w.a.id,)
    assert sp.idp_initiated and sp.default_relay_state == "/records/home" and sp.active
    record = w.h.events("SamlServiceProviderAdded")[-1]
    assert record.actor_id == w.admin.id
    assert audit_details(record)["after"]["entity_id"] == SP_ENTITY

    page = w.h.client.get(done.headers["location"])
    assert page.status_code == 200 and page.context["message_ids"] == ["saml_application_added"]
    row = page.text[page.text.index(f'data-sp="{sp.id}"') :].split("</tr>")[0]
    for shown in (SP_ENTITY, ACS, f"{ACS_2}", "email", "username, email, agencyOri", "allowed", "required"):
        assert shown in row, shown
    assert w.a.ori in row and ">enabled<" in row and f"/admin/applications/saml/{sp.id}/disable" in row
    # The form is blank again, every attribute ticked, for the next one.
    assert page.context["typed"]["name"] == "" and page.context["typed"]["attributes"] == list(ATTRIBUTES)


def test_the_metadata_can_come_as_a_file(w: World) -> None:
    token = _sign_in(w, w.admin.username)
    data = _form(token, metadata="")
    files = {"metadata_file": ("sp.xml", sp_metadata(entity_id="https://upload.example.gov/sp"), "text/xml")}
    done = w.h.client.post(PAGE, data=data, files=files, follow_redirects=False)
    assert done.status_code == 303, done.text
    assert [sp.entity_id for sp in _sps(w)] == ["https://upload.example.gov/sp"]


def test_an_admin_disables_one_and_it_no_longer_signs_anyone_in(w: World) -> None:
    token = _sign_in(w, w.admin.username)
    assert _create(w, token, idp_initiated="yes").status_code == 303
    (sp,) = _sps(w)
    start = f"/saml/start/{sp.id}"
    assert f'href="{start}"' in w.h.client.get("/apps").text
    assert posted(w.h.client.get(start)).action == ACS

    done = w.h.client.post(f"{PAGE}/{sp.id}/disable", data={"csrf_token": token}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"{PAGE}?done=saml_application_disabled"
    assert not _sps(w)[0].active
    record = w.h.events("SamlServiceProviderDisabled")[-1]
    assert record.actor_id == w.admin.id and audit_details(record)["sp_id"] == sp.id
    listed = w.h.client.get(PAGE)
    row = listed.text[listed.text.index(f'data-sp="{sp.id}"') :].split("</tr>")[0]
    assert ">disabled<" in row and "/disable" not in row

    refused = w.h.client.get(start)
    assert refused.status_code == 400 and 'data-error-code="saml_refused"' in refused.text
    assert start not in w.h.client.get("/apps").text
    again = w.h.client.post(f"{PAGE}/{sp.id}/disable", data={"csrf_token": token})
    assert again.status_code == 409 and again.template.name == TEMPLATE
    assert "sp_disabled" in again.context["message_ids"]
    unknown = w.h.client.post(f"{PAGE}/sp_{'x' * 24}/disable", data={"csrf_token": token})
    assert unknown.status_code == 404 and unknown.template.name == TEMPLATE
    assert len(w.h.events("SamlServiceProviderDisabled")) == 1


@pytest.mark.parametrize("who", ["coord", "alice"])
def test_coordinators_and_users_are_refused(w: World, who: str) -> None:
    token = _sign_in(w, w.admin.username)
    assert _create(w, token).status_code == 303
    (sp,) = _sps(w)
    token = _sign_in(w, getattr(w, who).username)
    refused_before = len(w.h.events("ConsoleRefused"))
    assert w.h.client.get(PAGE).status_code == 403
    assert _create(w, token, metadata=sp_metadata(entity_id="https://other.example.gov/sp").decode()).status_code == 403
    assert w.h.client.post(f"{PAGE}/{sp.id}/disable", data={"csrf_token": token}).status_code == 403
    assert len(w.h.events("ConsoleRefused")) == refused_before + 3
    assert [s.entity_id for s in _sps(w)] == [SP_ENTITY] and _sps(w)[0].active


def test_a_stale_sign_in_is_sent_to_reauthenticate_first(w: World) -> None:
    token = _sign_in(w, w.admin.username)
    w.h.clock.advance(timedelta(minutes=11))
    stale = _create(w, token)
    assert stale.status_code == 303 and stale.headers["location"] == f"/account/reauth?next={PAGE}"
    assert _sps(w) == [] and w.h.events("SamlServiceProviderAdded") == []


@pytest.mark.parametrize("token", [None, "", "0" * 64])
def test_the_form_token_is_required(w: World, token: str | None) -> None:
    good = _sign_in(w, w.admin.username)
    assert _create(w, good).status_code == 303
    (sp,) = _sps(w)
    data = _form("", metadata=sp_metadata(entity_id="https://other.example.gov/sp").decode())
    if token is None:
        del data["csrf_token"]
    else:
        data["csrf_token"] = token
    assert w.h.client.post(PAGE, data=data).status_code == 403
    # An empty body is not a form at all (400); a form field keeps the token the only thing missing.
    bare = {"go": "1"} if token is None else {"csrf_token": token}
    assert w.h.client.post(f"{PAGE}/{sp.id}/disable", data=bare).status_code == 403
    assert w.h.events("RequestRefused")[-1].reason == "csrf_failed"
    assert len(_sps(w)) == 1 and _sps(w)[0].active


_NO_POST = sp_metadata().replace(b"bindings:HTTP-POST", b"bindings:HTTP-Artifact")
_DTD = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + sp_metadata()[38:]


@pytest.mark.parametrize(
    ("metadata", "code", "words"),
    [
        ("this is not XML at all", "invalid_metadata", "not well-formed XML"),
        (_DTD.decode(), "invalid_metadata", "DTD"),
        (_NO_POST.decode(), "invalid_metadata", "HTTP-POST"),
        ('<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"/>', "invalid_metadata", "entityID"),
        (sp_metadata(acs=("https://*.example.gov/acs",)).decode(), "invalid_metadata", "AssertionConsumerService"),
        ("", "metadata_required", "metadata"),
    ],
)
def test_bad_metadata_is_explained_on_the_form_with_what_was_typed(
    w: World, metadata: str, code: str, words: str
) -> None:
    token = _sign_in(w, w.admin.username)
    page = _create(w, token, metadata=metadata, nameid="email", attribute=["username"], relay_state="/r/1")
    assert page.status_code == 400 and page.template.name == TEMPLATE
    assert page.context["message_ids"] == [code]
    assert words in page.context["messages"][0].text
    typed = page.context["typed"]
    assert (typed["name"], typed["metadata"], typed["nameid"]) == ("Records Search", metadata, "email")
    assert typed["attributes"] == ["username"] and typed["relay_state"] == "/r/1"
    # What was typed is back in the form, escaped, and the field is marked.
    assert 'value="Records Search"' in page.text and 'value="/r/1"' in page.text
    assert 'aria-invalid="true"' in page.text
    if metadata:
        assert page.text.count(str(escape(metadata))[:40]) == 1
    assert _sps(w) == [] and w.h.events("SamlServiceProviderAdded") == []


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"attribute": []}, 400, "attribute_required"),
        ({"attribute": ["username", "ssn"]}, 400, "invalid_attribute"),
        ({"name": ""}, 400, "invalid_name"),
        ({"nameid": "transient"}, 400, "invalid_nameid_format"),
        ({"agencies": "AL0099999"}, 404, "agency_not_found"),
        ({"logo_url": "http://logo.example.gov/x.png"}, 400, None),
    ],
)
def test_other_bad_choices_are_explained_too(w: World, changes: dict[str, Any], status: int, code: str | None) -> None:
    token = _sign_in(w, w.admin.username)
    page = _create(w, token, **changes)
    assert page.status_code == status and page.template.name == TEMPLATE
    if code:
        assert page.context["message_ids"] == [code]
    assert 'aria-invalid="true"' not in page.text and _sps(w) == []


def test_a_second_application_with_the_same_entity_id_is_refused(w: World) -> None:
    token = _sign_in(w, w.admin.username)
    assert _create(w, token).status_code == 303
    twin = _create(w, token, name="Records Search (copy)", metadata=sp_metadata(acs=(ACS_2,)).decode())
    assert twin.status_code == 409 and twin.template.name == TEMPLATE
    assert twin.context["message_ids"] == ["sp_exists"] and "entity ID" in twin.context["messages"][0].text
    assert twin.context["typed"]["name"] == "Records Search (copy)"
    assert [(sp.name, [a.url for a in sp.acs]) for sp in _sps(w)] == [("Records Search", [ACS])]
    assert len(w.h.events("SamlServiceProviderAdded")) == 1
