"""Security keys and passkeys on the server side, checked against a software authenticator."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import cbor2
import pytest
from webauthn.helpers import base64url_to_bytes, parse_authenticator_data
from webauthn.helpers.cose import COSECRV, COSEKTY, COSEAlgorithmIdentifier
from webauthn.helpers.decode_credential_public_key import DecodedEC2PublicKey, decode_credential_public_key

from alacop.core.credentials import AuthMethod, MethodKind
from alacop.methods import webauthn
from alacop.methods.webauthn import MAX_CREDENTIAL_JSON, NewCredential, RelyingParty, WebAuthnFailed
from tests.support.authenticator import AuthenticatorError, SoftwareAuthenticator, b64url, unb64url

RP = RelyingParty(id="127.0.0.1", name="AlaCOP", origin="http://127.0.0.1:8000")
USER_ID = str(uuid.uuid4())
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _reg_options(challenge: str, existing: list[AuthMethod] | None = None) -> str:
    return webauthn.registration_options(
        RP,
        user_handle=webauthn.handle_for(USER_ID),
        username="cs0101@alacop.gov",
        display_name="Casey Smith",
        challenge=challenge,
        existing=existing or [],
    )


def _method(new: NewCredential) -> AuthMethod:
    return AuthMethod(
        id=str(uuid.uuid4()),
        user_id=USER_ID,
        kind=MethodKind.WEBAUTHN,
        name="Key",
        created_at=NOW,
        credential_id=new.credential_id,
        public_key=new.public_key,
        sign_count=new.sign_count,
        transports=new.transports,
        synced=new.synced,
        discoverable=new.discoverable,
    )


def _enrolled(key: SoftwareAuthenticator) -> AuthMethod:
    challenge = webauthn.new_challenge()
    return _method(webauthn.verify_registration(RP, key.register(_reg_options(challenge), RP.origin), challenge))


def _auth_options(challenge: str, methods: list[AuthMethod], *, require_uv: bool = False) -> str:
    return webauthn.authentication_options(RP, challenge=challenge, methods=methods, require_uv=require_uv)


def _edit(credential_json: str, change: object) -> str:
    data = json.loads(credential_json)
    change(data)  # type: ignore[operator]
    return json.dumps(data)


def _client_data(data: dict[str, object]) -> dict[str, object]:
    response = data["response"]
    assert isinstance(response, dict)
    parsed: dict[str, object] = json.loads(unb64url(response["clientDataJSON"]))
    return parsed


def _set_client_data(data: dict[str, object], **changes: object) -> None:
    response = data["response"]
    assert isinstance(response, dict)
    client = {**_client_data(data), **changes}
    response["clientDataJSON"] = b64url(json.dumps(client).encode())


# -- the software authenticator itself -----------------------------------------------------------------
def test_authenticator_builds_none_attestation_with_a_cose_es256_key() -> None:
    key = SoftwareAuthenticator()
    challenge = webauthn.new_challenge()
    answer = json.loads(key.register(_reg_options(challenge), RP.origin))
    assert answer["id"] == answer["rawId"]
    assert answer["type"] == "public-key"
    assert answer["clientExtensionResults"] == {"credProps": {"rk": True}}
    client = json.loads(unb64url(answer["response"]["clientDataJSON"]))
    assert client == {"type": "webauthn.create", "challenge": challenge, "origin": RP.origin, "crossOrigin": False}
    attestation = cbor2.loads(unb64url(answer["response"]["attestationObject"]))
    assert attestation["fmt"] == "none"
    assert attestation["attStmt"] == {}
    auth_data = parse_authenticator_data(attestation["authData"])
    assert auth_data.rp_id_hash == hashlib.sha256(b"127.0.0.1").digest()
    assert auth_data.flags.up
    assert auth_data.flags.uv
    assert auth_data.flags.at
    assert not auth_data.flags.be
    assert auth_data.attested_credential_data is not None
    assert auth_data.attested_credential_data.credential_id == unb64url(answer["rawId"])
    decoded = decode_credential_public_key(auth_data.attested_credential_data.credential_public_key)
    assert isinstance(decoded, DecodedEC2PublicKey)
    assert decoded.kty == COSEKTY.EC2
    assert decoded.crv == COSECRV.P256
    assert decoded.alg == COSEAlgorithmIdentifier.ECDSA_SHA_256
    public = key.credential().private_key.public_key().public_numbers()
    assert int.from_bytes(decoded.x, "big") == public.x
    assert int.from_bytes(decoded.y, "big") == public.y


def test_authenticator_assertion_has_rp_hash_flags_and_counter() -> None:
    key = SoftwareAuthenticator(user_verification=False)
    method = _enrolled(key)
    answer = json.loads(key.assert_(_auth_options(webauthn.new_challenge(), [method]), RP.origin))  # noqa: PT009
    auth_data = parse_authenticator_data(unb64url(answer["response"]["authenticatorData"]))
    assert auth_data.rp_id_hash == hashlib.sha256(b"127.0.0.1").digest()
    assert auth_data.flags.up
    assert not auth_data.flags.uv
    assert auth_data.sign_count == 1
    assert json.loads(unb64url(answer["response"]["clientDataJSON"]))["type"] == "webauthn.get"


def test_authenticator_refuses_an_excluded_credential_and_unknown_ones() -> None:
    key = SoftwareAuthenticator()
    method = _enrolled(key)
    with pytest.raises(AuthenticatorError, match="InvalidStateError"):
        key.register(_reg_options(webauthn.new_challenge(), [method]), RP.origin)
    other = SoftwareAuthenticator()
    with pytest.raises(AuthenticatorError, match="NotAllowedError"):
        other.get(_auth_options(webauthn.new_challenge(), [method]), RP.origin)


def test_authenticator_offers_only_discoverable_credentials_without_an_allow_list() -> None:
    key = SoftwareAuthenticator(resident_keys=False)
    _enrolled(key)
    with pytest.raises(AuthenticatorError, match="NotAllowedError"):
        key.get(_auth_options(webauthn.new_challenge(), []), RP.origin)


# -- options --------------------------------------------------------------------------------------------
def test_registration_options_ask_no_attestation_and_carry_the_opaque_handle() -> None:
    key = SoftwareAuthenticator()
    existing = _enrolled(key)
    challenge = webauthn.new_challenge()
    options = json.loads(_reg_options(challenge, [existing]))
    assert options["challenge"] == challenge
    assert options["rp"] == {"id": "127.0.0.1", "name": "AlaCOP"}
    assert options["user"]["id"] == webauthn.handle_for(USER_ID)
    assert base64url_to_bytes(options["user"]["id"]) == uuid.UUID(USER_ID).bytes
    assert options["attestation"] == "none"
    assert options["authenticatorSelection"]["residentKey"] == "preferred"
    assert [c["id"] for c in options["excludeCredentials"]] == [existing.credential_id]
    assert {"type": "public-key", "alg": -7} in options["pubKeyCredParams"]


@pytest.mark.parametrize(("require_uv", "expected"), [(True, "required"), (False, "preferred")])
def test_authentication_options_user_verification(require_uv: bool, expected: str) -> None:
    options = json.loads(_auth_options(webauthn.new_challenge(), [], require_uv=require_uv))
    assert options["userVerification"] == expected
    assert options["rpId"] == "127.0.0.1"
    assert options["allowCredentials"] == []


# -- registration -----------------------------------------------------------------------------------------
def test_registration_verifies_and_returns_what_later_checks_need() -> None:
    key = SoftwareAuthenticator(transports=("usb", "nfc"))
    challenge = webauthn.new_challenge()
    new = webauthn.verify_registration(RP, key.register(_reg_options(challenge), RP.origin), challenge)
    assert new.credential_id == key.credential().id
    assert new.sign_count == 0
    assert new.transports == ("usb", "nfc")
    assert new.discoverable is True
    assert new.synced is False
    assert decode_credential_public_key(base64url_to_bytes(new.public_key)).alg == COSEAlgorithmIdentifier.ECDSA_SHA_256
    assert webauthn.amr_for(_method(new)) == "hwk"


def test_synced_passkey_is_software_held_and_non_resident_key_is_not_discoverable() -> None:
    synced = _enrolled(SoftwareAuthenticator(backup=True))
    assert synced.synced is True
    assert webauthn.amr_for(synced) == "swk"
    plain = _enrolled(SoftwareAuthenticator(resident_keys=False))
    assert plain.discoverable is False


def test_registration_without_user_verification_is_accepted() -> None:
    # Registration asks UV "preferred": a key with no PIN still registers as a second factor.
    method = _enrolled(SoftwareAuthenticator(user_verification=False))
    assert method.credential_id


def _wrong_type(d: dict[str, object]) -> None:
    _set_client_data(d, type="webauthn.get")


def _other_challenge(d: dict[str, object]) -> None:
    _set_client_data(d, challenge=webauthn.new_challenge())


def _flip_attested_rp_hash(d: dict[str, object]) -> None:
    # "none" attestation signs nothing; what still binds the key to this RP is the RP id hash.
    response = d["response"]
    assert isinstance(response, dict)
    attestation = cbor2.loads(unb64url(response["attestationObject"]))
    auth_data = bytearray(attestation["authData"])
    auth_data[0] ^= 0x01
    attestation["authData"] = bytes(auth_data)
    response["attestationObject"] = b64url(cbor2.dumps(attestation))


def _truncate_attestation(d: dict[str, object]) -> None:
    response = d["response"]
    assert isinstance(response, dict)
    response["attestationObject"] = response["attestationObject"][:40]


def _drop_attestation(d: dict[str, object]) -> None:
    response = d["response"]
    assert isinstance(response, dict)
    del response["attestationObject"]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda d: _set_client_data(d, origin="https://evil.example"), id="clientdata-origin"),
        pytest.param(_wrong_type, id="clientdata-type"),
        pytest.param(_other_challenge, id="clientdata-challenge"),
        pytest.param(_flip_attested_rp_hash, id="attested-rp-id-hash"),
        pytest.param(_truncate_attestation, id="attestation-truncated"),
        pytest.param(_drop_attestation, id="attestation-missing"),
        pytest.param(lambda d: d.update(rawId=b64url(b"another id")), id="rawid-mismatch"),
        pytest.param(lambda d: d.update(type="password"), id="wrong-type"),
    ],
)
def test_tampered_registration_is_refused(tamper: object) -> None:
    key = SoftwareAuthenticator()
    challenge = webauthn.new_challenge()
    answer = _edit(key.register(_reg_options(challenge), RP.origin), tamper)
    with pytest.raises(WebAuthnFailed) as caught:
        webauthn.verify_registration(RP, answer, challenge)
    assert caught.value.reason == "registration_invalid"


def test_registration_from_another_origin_or_for_another_rp_is_refused() -> None:
    challenge = webauthn.new_challenge()
    phished = SoftwareAuthenticator().register(_reg_options(challenge), "https://alacop.evil.example")
    with pytest.raises(WebAuthnFailed, match="registration_invalid"):
        webauthn.verify_registration(RP, phished, challenge)
    other_rp = SoftwareAuthenticator().register(_reg_options(challenge), RP.origin, rp_id="evil.example")
    with pytest.raises(WebAuthnFailed, match="registration_invalid"):
        webauthn.verify_registration(RP, other_rp, challenge)


def test_registration_for_another_challenge_is_refused() -> None:
    answer = SoftwareAuthenticator().register(_reg_options(webauthn.new_challenge()), RP.origin)
    with pytest.raises(WebAuthnFailed) as caught:
        webauthn.verify_registration(RP, answer, webauthn.new_challenge())
    assert caught.value.reason == "registration_invalid"


def test_registration_without_user_presence_is_refused() -> None:
    key = SoftwareAuthenticator()
    key.user_presence = False
    challenge = webauthn.new_challenge()
    with pytest.raises(WebAuthnFailed, match="registration_invalid"):
        webauthn.verify_registration(RP, key.register(_reg_options(challenge), RP.origin), challenge)


@pytest.mark.parametrize("raw", ["", "{not json", "[]", "null", '"text"', "42"])
def test_malformed_json_is_refused_as_malformed(raw: str) -> None:
    with pytest.raises(WebAuthnFailed) as caught:
        webauthn.verify_registration(RP, raw, webauthn.new_challenge())
    assert caught.value.reason == "credential_malformed"
    with pytest.raises(WebAuthnFailed) as caught:
        webauthn.credential_id_of(raw)
    assert caught.value.reason == "credential_malformed"


def test_oversized_json_is_refused_before_parsing() -> None:
    challenge = webauthn.new_challenge()
    answer = json.loads(SoftwareAuthenticator().register(_reg_options(challenge), RP.origin))
    answer["padding"] = "x" * MAX_CREDENTIAL_JSON
    with pytest.raises(WebAuthnFailed) as caught:
        webauthn.verify_registration(RP, json.dumps(answer), challenge)
    assert caught.value.reason == "credential_malformed"


def test_valid_json_missing_fields_is_refused_as_invalid() -> None:
    with pytest.raises(WebAuthnFailed) as caught:
        webauthn.verify_registration(RP, json.dumps({"id": "abc"}), webauthn.new_challenge())
    assert caught.value.reason == "registration_invalid"


# -- authentication ---------------------------------------------------------------------------------------
def _verify(
    key: SoftwareAuthenticator, method: AuthMethod, *, require_uv: bool = False, origin: str = RP.origin, **kw: object
) -> int:
    challenge = webauthn.new_challenge()
    answer = key.get(_auth_options(challenge, [method], require_uv=require_uv), origin, **kw)  # type: ignore[arg-type]
    return webauthn.verify_authentication(RP, answer, challenge, method, require_uv=require_uv)


def test_authentication_verifies_and_returns_the_new_count() -> None:
    key = SoftwareAuthenticator()
    method = _enrolled(key)
    assert _verify(key, method) == 1
    assert _verify(key, replace(method, sign_count=1)) == 2


def test_credential_id_of_reads_raw_id() -> None:
    key = SoftwareAuthenticator()
    method = _enrolled(key)
    answer = key.get(_auth_options(webauthn.new_challenge(), [method]), RP.origin)
    assert webauthn.credential_id_of(answer) == method.credential_id
    with pytest.raises(WebAuthnFailed, match="credential_malformed"):
        webauthn.credential_id_of(json.dumps({"rawId": "A" * 1401}))
    with pytest.raises(WebAuthnFailed, match="credential_malformed"):
        webauthn.credential_id_of(json.dumps({"rawId": 7}))


def test_authenticator_without_a_counter_is_accepted_at_zero() -> None:
    key = SoftwareAuthenticator(counter_step=0)
    method = _enrolled(key)
    assert _verify(key, method) == 0
    assert _verify(key, method) == 0


def test_assertion_signed_by_another_key_is_refused() -> None:
    key = SoftwareAuthenticator()
    method = _enrolled(key)
    impostor = _enrolled(SoftwareAuthenticator())
    challenge = webauthn.new_challenge()
    answer = key.get(_auth_options(challenge, [method]), RP.origin)
    wrong_key = replace(method, public_key=impostor.public_key)
    with pytest.raises(WebAuthnFailed) as caught:
        webauthn.verify_authentication(RP, answer, challenge, wrong_key, require_uv=False)
    assert caught.value.reason == "assertion_invalid"


def _flip(field: str, index: int = -1) -> object:
    def change(d: dict[str, object]) -> None:
        response = d["response"]
        assert isinstance(response, dict)
        raw = bytearray(unb64url(response[field]))
        raw[index] ^= 0x01
        response[field] = b64url(bytes(raw))

    return change


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_flip("signature"), id="signature"),
        pytest.param(_flip("signature", 10), id="signature-middle"),
        pytest.param(_flip("authenticatorData", 3), id="rp-id-hash"),
        pytest.param(_flip("authenticatorData", 32), id="flags-up-cleared"),
        pytest.param(lambda d: _set_client_data(d, origin="https://evil.example"), id="clientdata-origin"),
        pytest.param(lambda d: _set_client_data(d, challenge=webauthn.new_challenge()), id="clientdata-challenge"),
        pytest.param(lambda d: _set_client_data(d, type="webauthn.create"), id="clientdata-type"),
        pytest.param(lambda d: _set_client_data(d, extra="x"), id="clientdata-extra-member"),
    ],
)
def test_tampered_assertion_is_refused(tamper: object) -> None:
    key = SoftwareAuthenticator()
    method = _enrolled(key)
    challenge = webauthn.new_challenge()
    answer = _edit(key.get(_auth_options(challenge, [method]), RP.origin), tamper)
    with pytest.raises(WebAuthnFailed) as caught:
        webauthn.verify_authentication(RP, answer, challenge, method, require_uv=False)
    assert caught.value.reason == "assertion_invalid"


def test_assertion_from_a_phishing_origin_or_for_another_challenge_is_refused() -> None:
    key = SoftwareAuthenticator()
    method = _enrolled(key)
    with pytest.raises(WebAuthnFailed, match="assertion_invalid"):
        _verify(key, method, origin="https://alacop.evil.example")
    challenge = webauthn.new_challenge()
    answer = key.get(_auth_options(challenge, [method]), RP.origin)
    with pytest.raises(WebAuthnFailed, match="assertion_invalid"):
        webauthn.verify_authentication(RP, answer, webauthn.new_challenge(), method, require_uv=False)


def test_user_verification_is_enforced_only_when_required() -> None:
    key = SoftwareAuthenticator(user_verification=False)
    method = _enrolled(key)
    assert _verify(key, method, require_uv=False) == 1
    with pytest.raises(WebAuthnFailed) as caught:
        _verify(key, method, require_uv=True)
    assert caught.value.reason == "assertion_invalid"
    assert _verify(key, method, require_uv=True, uv=True) >= 1


@pytest.mark.parametrize("reported", [3, 5])
def test_sign_count_not_moving_forward_is_reported_as_regressed(reported: int) -> None:
    key = SoftwareAuthenticator()
    method = replace(_enrolled(key), sign_count=5)
    with pytest.raises(WebAuthnFailed) as caught:
        _verify(key, method, sign_count=reported)
    assert caught.value.reason == "sign_count_regressed"
    assert _verify(key, method, sign_count=6) == 6


def test_forged_assertion_with_a_low_counter_is_not_reported_as_a_cloned_key() -> None:
    key = SoftwareAuthenticator()
    method = replace(_enrolled(key), sign_count=5)
    challenge = webauthn.new_challenge()
    answer = _edit(key.get(_auth_options(challenge, [method]), RP.origin, sign_count=1), _flip("signature"))
    with pytest.raises(WebAuthnFailed) as caught:
        webauthn.verify_authentication(RP, answer, challenge, method, require_uv=False)
    assert caught.value.reason == "assertion_invalid"


@pytest.mark.parametrize("raw", ["", "{not json", "[]", "x" * (MAX_CREDENTIAL_JSON + 1)])
def test_malformed_assertion_json_is_refused(raw: str) -> None:
    method = _enrolled(SoftwareAuthenticator())
    with pytest.raises(WebAuthnFailed) as caught:
        webauthn.verify_authentication(RP, raw, webauthn.new_challenge(), method, require_uv=False)
    assert caught.value.reason == "credential_malformed"
