"""The portal's SAML Responses checked by node-saml (@node-saml/node-saml 5.1.0, the library under
passport-saml), a second service provider that is not ours and shares no XML stack with the portal:
xmldom and xml-crypto instead of lxml and xmlsec. node-saml also builds and signs the AuthnRequests.

node-saml runs in node (tests/protocols/node_saml/sp.js, one process per step, JSON in and out), so it
checks times against the real clock: the portal's clock is pinned to it. Each refusal test also shows
node-saml accepting the same response without the one thing that is wrong, so it is refused for that.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from lxml import etree

from alacop.core.saml import ServiceProvider
from alacop.protocols.saml.response import _sign
from alacop.protocols.saml.xmlsafe import DS, NS
from tests.conftest import Harness
from tests.protocols.conftest import sign_in_from
from tests.support.saml import (
    ACS,
    IDP_ENTITY,
    IDP_SSO,
    RSA_SHA1,
    RSA_SHA256,
    SP_ENTITY,
    Posted,
    SpKeys,
    idp_certificate,
    posted,
    register_sp,
    sp_keys,
    sp_metadata,
)

NODE_DIR = Path(__file__).resolve().parent / "node_saml"
NODE_SAML = NODE_DIR / "node_modules" / "@node-saml" / "node-saml" / "package.json"
NODE_SAML_VERSION = "5.1.0"
PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
ORIGIN = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def node_ready() -> None:
    """Skips (fails under CI=true) when node or the pinned node-saml is missing."""
    reason = None
    if shutil.which("node") is None:
        reason = "node is not installed: the node-saml interop tests need node >= 20"
    elif not NODE_SAML.is_file():
        reason = f"{NODE_SAML} is missing: run `(cd tests/protocols/node_saml && npm ci)` (scripts/test does)"
    elif json.loads(NODE_SAML.read_text())["version"] != NODE_SAML_VERSION:
        # A stale node_modules would test some other node-saml than the one the lock file pins.
        reason = f"node-saml in {NODE_DIR} is not {NODE_SAML_VERSION}: run `npm ci` there"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true)")
        pytest.skip(reason)


def node(command: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        ["node", "sp.js"], input=json.dumps(command), capture_output=True, text=True, cwd=NODE_DIR, timeout=60
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def node_request(keys: SpKeys, *, sha256: bool = True, relay_state: str = "/records/42") -> tuple[str, str, str]:
    """node-saml's own signed AuthnRequest as the redirect it builds: (portal path, request ID, its instant)."""
    command = {
        "action": "request",
        "entryPoint": IDP_SSO,
        "spEntity": SP_ENTITY,
        "acs": ACS,
        "privateKey": keys.key_pem,
        "relayState": relay_state,
    }
    if sha256:
        command["signatureAlgorithm"] = "sha256"
    made = node(command)
    url = made["url"]
    assert url.startswith(IDP_SSO + "?"), url
    return url[len(ORIGIN) :], made["id"], made["instant"]


def node_validate(
    h: Harness, saml_response: str, requests: dict[str, str], *, times: int = 1, clock_skew_ms: int = 2000
) -> list[dict[str, Any]]:
    """node-saml's validatePostResponseAsync, `times` times in one process, with these request IDs
    (ID -> instant) in its InResponseTo cache as if it had sent them itself."""
    answer = node(
        {
            "action": "validate",
            "spEntity": SP_ENTITY,
            "acs": ACS,
            "idpCert": idp_certificate(h),
            "samlResponse": saml_response,
            "requests": requests,
            "times": times,
            "clockSkewMs": clock_skew_ms,
        }
    )
    results: list[dict[str, Any]] = answer["results"]
    assert len(results) == times
    return results


@pytest.fixture
def frozen_now(harness: Harness, node_ready: None) -> Harness:
    # node-saml checks times against the real clock; the portal's clock is pinned to it here.
    harness.clock.set(datetime.now(UTC).replace(microsecond=0))
    return harness


def round_trip(h: Harness, *, issue_at: datetime | None = None) -> tuple[ServiceProvider, Posted, str, str]:
    """An application on node-saml with signed requests: request, sign-in, the posted Response.
    Returns (the registered application, the form, the request ID, the request's instant)."""
    keys = sp_keys()
    sp = register_sp(h, metadata=sp_metadata(keys=keys, signed_requests=True))
    path, request_id, instant = node_request(keys)
    first = h.client.get(path, follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/login?flow="), first.text
    back = sign_in_from(h, first.headers["location"])
    if issue_at is not None:
        h.clock.set(issue_at)
    form = posted(h.client.get(back))
    assert form.action == ACS and form.relay_state == "/records/42"
    return sp, form, request_id, instant


def test_node_saml_accepts_the_response_to_its_own_sha256_signed_request(frozen_now: Harness) -> None:
    h = frozen_now
    user = h.create_user()
    sp, form, request_id, instant = round_trip(h)
    received = h.events("SamlRequestReceived")
    assert [json.loads(e.details)["signed"] for e in received] == [True]
    [result] = node_validate(h, form.saml_response, {request_id: instant})
    # Reached only past both signatures: node-saml is told to want the Response's and the Assertion's.
    assert result["ok"], result
    profile = result["profile"]
    assert profile["issuer"] == IDP_ENTITY
    assert profile["inResponseTo"] == request_id
    assert profile["nameID"] == sp.persistent_id(user.id)
    assert profile["nameIDFormat"] == PERSISTENT
    assert profile["nameQualifier"] == IDP_ENTITY and profile["spNameQualifier"] == SP_ENTITY
    assert profile["sessionIndex"]
    # One value is a string and several a list, as node-saml maps them.
    assert profile["attributes"] == {
        "username": "cs0101@alacop.gov",
        "email": "cs0101@test.al.gov",
        "name": "Casey Smith",
        "agencyName": "Test County Sheriff",
        "agencyOri": "AL0010000",
        "roles": "user",
        "aal": "aal2",
        "amr": profile["attributes"]["amr"],
    }
    assert set(profile["attributes"]["amr"]) == {"pwd", "otp"}
    issued = h.events("SamlAssertionIssued")
    assert len(issued) == 1 and json.loads(issued[0].details)["request_id"] == request_id


def test_node_saml_refuses_a_response_with_an_attribute_changed(frozen_now: Harness) -> None:
    h = frozen_now
    h.create_user()
    _, form, request_id, instant = round_trip(h)
    original = b"<saml:AttributeValue>AL0010000</saml:AttributeValue>"
    assert form.xml.count(original) == 1
    tampered = base64.b64encode(form.xml.replace(original, original.replace(b"AL0010000", b"AL0010001"))).decode()
    [refused] = node_validate(h, tampered, {request_id: instant})
    assert not refused["ok"]
    assert refused["error"] == "Invalid document signature"
    [accepted] = node_validate(h, form.saml_response, {request_id: instant})
    assert accepted["ok"], accepted


def test_node_saml_checks_the_assertion_signature_on_its_own(frozen_now: Harness) -> None:
    """An attribute changed and the Response re-signed with the portal's own key: only the Assertion's
    signature is wrong, and node-saml still refuses, so the portal's Assertion signature is one it checks."""
    h = frozen_now
    h.create_user()
    _, form, request_id, instant = round_trip(h)
    root = etree.fromstring(form.xml)
    outer = root.find("ds:Signature", NS)
    assert outer is not None
    position = root.index(outer)
    root.remove(outer)
    root.insert(position, etree.Element(f"{DS}Signature", nsmap={"ds": NS["ds"]}, Id="placeholder"))
    value = root.find(".//saml:Attribute[@Name='agencyOri']/saml:AttributeValue", NS)
    assert value is not None and value.text == "AL0010000"
    value.text = "AL0010001"
    resigned = _sign(root, h.run(h.portal.saml.certs.signer))
    xml = etree.tostring(resigned, xml_declaration=True, encoding="UTF-8")
    [refused] = node_validate(h, base64.b64encode(xml).decode(), {request_id: instant})
    assert not refused["ok"]
    assert refused["error"] == "Invalid signature"


def test_node_saml_refuses_an_expired_response(frozen_now: Harness) -> None:
    h = frozen_now
    h.create_user()
    real = datetime.now(UTC).replace(microsecond=0)
    # The request arrives on time; the portal's clock then runs 10 minutes slow when it answers.
    _, form, request_id, instant = round_trip(h, issue_at=real - timedelta(minutes=10))
    conditions = etree.fromstring(form.xml).find(".//saml:Conditions", NS)
    assert conditions is not None
    assert conditions.get("NotOnOrAfter") == (real - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    [refused] = node_validate(h, form.saml_response, {request_id: instant})
    assert not refused["ok"]
    # With InResponseTo checked, node-saml first looks for a SubjectConfirmation in its time window, and
    # the portal's (NotOnOrAfter as the Conditions') is past, so that is the message, not "expired".
    assert refused["error"] == "No valid subject confirmation found among those available in the SAML assertion"
    # Time checks off (acceptedClockSkewMs -1): the same response passes, so time was the only fault.
    [accepted] = node_validate(h, form.saml_response, {request_id: instant}, clock_skew_ms=-1)
    assert accepted["ok"], accepted


def test_node_saml_refuses_a_response_to_a_request_it_did_not_send(frozen_now: Harness) -> None:
    h = frozen_now
    h.create_user()
    _, form, request_id, instant = round_trip(h)
    # An ID node-saml generated itself, for a request that never went to the portal.
    _, other_id, other_instant = node_request(sp_keys())
    assert other_id != request_id
    [refused] = node_validate(h, form.saml_response, {other_id: other_instant})
    assert not refused["ok"]
    assert refused["error"] == "InResponseTo is not valid"
    [accepted] = node_validate(h, form.saml_response, {request_id: instant})
    assert accepted["ok"], accepted


def test_node_saml_refuses_the_same_response_twice(frozen_now: Harness) -> None:
    h = frozen_now
    h.create_user()
    _, form, request_id, instant = round_trip(h)
    first, replayed = node_validate(h, form.saml_response, {request_id: instant}, times=2)
    assert first["ok"], first
    # node-saml forgets the request ID once it is answered, so a replay has nothing to answer.
    assert not replayed["ok"]
    assert replayed["error"] == "InResponseTo is not valid"


def test_node_saml_default_sha1_request_signature_is_refused(frozen_now: Harness) -> None:
    h = frozen_now
    h.create_user()
    keys = sp_keys()
    register_sp(h, metadata=sp_metadata(keys=keys, signed_requests=True))
    path, _, _ = node_request(keys, sha256=False)
    assert parse_qs(urlsplit(path).query)["SigAlg"] == [RSA_SHA1]
    refused = h.client.get(path, follow_redirects=False)
    assert refused.status_code == 400
    assert "SAMLResponse" not in refused.text
    events = h.events("SamlRequestRefused")
    assert [e.reason for e in events] == ["signature_algorithm_refused"]
    assert json.loads(events[0].details)["entity_id"] == SP_ENTITY
    assert h.events("SamlRequestReceived") == []
    # The same application's SHA-256 request from node-saml goes through to the sign-in.
    sha256_path, _, _ = node_request(keys)
    assert parse_qs(urlsplit(sha256_path).query)["SigAlg"] == [RSA_SHA256]
    accepted = h.client.get(sha256_path, follow_redirects=False)
    assert accepted.status_code == 303 and accepted.headers["location"].startswith("/login?flow=")
