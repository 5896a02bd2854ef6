"""SAML Response signing benchmark for the AlaCOP Portal, on one CPU core.

Run from the repository root:

    .venv/bin/python bench/saml.py [--seconds 5] [--core 0] [--provider-requests 1000] [--json PATH]

It pins itself to one core (`os.sched_setaffinity`) and measures, in one run:

1. bare RSA-2048 PKCS#1 v1.5 SHA-256 signatures per second with `cryptography`: the floor, since every
   Response carries two signatures (the Assertion's and the Response's);
2. signed Responses per second built by `alacop.protocols.saml.response.success(...)` from realistic
   values (an application with every attribute, a user, an agency, an AAL2 session), with p50 and p99
   latency per Response and the ratio Responses/s ÷ (RSA signs/s ÷ 2);
3. unless `--provider-requests 0`: the SSO endpoint's work without HTTP, `SamlProvider.receive(...)`
   on a signed HTTP-Redirect AuthnRequest from a signed-in user (read and inflate the request, check
   its signature, store it, audit it, sign the Response, mark it answered, audit that), on SQLite in a
   temporary folder. The requests are made before the clock starts.

Target (the issue): at least 300 signed Responses per second on one core, for (2).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alacop.core.accounts import Agency, Role, User, UserStatus  # noqa: E402
from alacop.core.saml import ATTRIBUTES, AssertionConsumer, ServiceProvider, new_nameid_salt  # noqa: E402
from alacop.core.sessions import Session  # noqa: E402
from alacop.protocols.saml import response  # noqa: E402
from alacop.protocols.saml.certs import Signer, fingerprint, generate  # noqa: E402
from alacop.protocols.saml.metadata import sp_metadata  # noqa: E402

TARGET = 300  # signed Responses per second on one core
IDP_ENTITY = "https://portal.alacop.gov/saml/metadata"
SP_ENTITY = "https://records.example.gov/saml/metadata"
ACS = "https://records.example.gov/saml/acs"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
PASSWORD = "granite harbor lantern 77"


def pin(core: int) -> None:
    if core not in os.sched_getaffinity(0):
        raise SystemExit(f"core {core} is not available to this process ({sorted(os.sched_getaffinity(0))})")
    os.sched_setaffinity(0, {core})
    if os.sched_getaffinity(0) != {core}:
        raise SystemExit(f"could not pin to core {core}")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _timed(fn, seconds: float) -> dict:
    """Calls fn() back to back for `seconds` (after a short warm-up); rate, CPU rate and latencies."""
    warm_until = time.perf_counter() + min(1.0, seconds / 5)
    while time.perf_counter() < warm_until:
        fn()
    latencies: list[float] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    deadline = start + seconds
    now = start
    while now < deadline:
        fn()
        t = time.perf_counter()
        latencies.append(t - now)
        now = t
    wall, cpu = now - start, time.process_time() - cpu_start
    return {
        "count": len(latencies),
        "per_s": len(latencies) / wall,
        "per_cpu_s": len(latencies) / cpu if cpu else float("nan"),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
    }


# ------------------------------------------------------------------------------------------------
# (1) bare RSA and (2) response.success
# ------------------------------------------------------------------------------------------------
def bench_rsa(signer: Signer, seconds: float) -> dict:
    # About the size of a ds:SignedInfo; RSA's cost hardly depends on it (one SHA-256 of it).
    message = secrets.token_bytes(600)
    return _timed(lambda: signer.key.sign(message, padding.PKCS1v15(), hashes.SHA256()), seconds)


def realistic(now: datetime) -> tuple[ServiceProvider, User, Agency, Session]:
    agency = Agency(id=str(uuid.uuid4()), ori="AL0010000", name="Montgomery County Sheriff's Office")
    user = User(
        id=str(uuid.uuid4()),
        username="cs0101",
        email="casey.smith@mcso.al.gov",
        name="Casey Smith",
        agency_id=agency.id,
        role=Role.USER,
        status=UserStatus.ACTIVE,
        password_hash=None,
        password_changed_at=now,
        must_change_password=False,
        created_at=now,
    )
    sp = ServiceProvider(
        id="sp_" + secrets.token_urlsafe(18),
        entity_id=SP_ENTITY,
        name="Records Search",
        acs=(AssertionConsumer(ACS, 0, True),),
        certificates=(),
        created_at=now,
        nameid_salt=new_nameid_salt(),
        attributes=ATTRIBUTES,
    )
    session = Session(
        id_hash=secrets.token_hex(32),
        user_id=user.id,
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(hours=12),
        auth_time=now,
        aal="aal2",
        amr=("pwd", "otp"),
        source_ip="10.1.2.3",
        user_agent="Mozilla/5.0",
    )
    return sp, user, agency, session


def bench_responses(signer: Signer, seconds: float) -> tuple[dict, int]:
    now = datetime.now(UTC).replace(microsecond=0)
    sp, user, agency, session = realistic(now)

    def one() -> response.Answer:
        return response.success(
            issuer=IDP_ENTITY,
            signer=signer,
            sp=sp,
            acs_url=ACS,
            in_response_to="_" + secrets.token_hex(20),
            relay_state="/records/42",
            user=user,
            agency=agency,
            session=session,
            session_index=secrets.token_hex(16),
            domain="alacop.gov",
            now=now,
        )

    size = len(base64.b64decode(one().saml_response))
    _check(one(), signer)
    return _timed(one, seconds), size


def _check(answer: response.Answer, signer: Signer) -> None:
    """The thing measured is a real signed Response: both signatures verify (outside the timing)."""
    from lxml import etree
    from signxml import XMLVerifier

    root = etree.fromstring(base64.b64decode(answer.saml_response))
    assertion = root.find("{urn:oasis:names:tc:SAML:2.0:assertion}Assertion")
    assert assertion is not None
    for element in (root, assertion):
        XMLVerifier().verify(etree.tostring(element), x509_cert=signer.cert_pem, id_attribute="ID")


# ------------------------------------------------------------------------------------------------
# (3) SamlProvider.receive on SQLite
# ------------------------------------------------------------------------------------------------
def _signed_query(sso_url: str, key, now: datetime) -> bytes:
    """An AuthnRequest by HTTP-Redirect, signed by the application, as a browser brings it."""
    xml = (
        '<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
        f'ID="_{secrets.token_hex(20)}" Version="2.0" IssueInstant="{now:%Y-%m-%dT%H:%M:%SZ}" '
        f'Destination="{sso_url}" AssertionConsumerServiceURL="{ACS}" '
        'ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST">'
        f"<saml:Issuer>{SP_ENTITY}</saml:Issuer>"
        '<samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent" AllowCreate="true"/>'
        "</samlp:AuthnRequest>"
    ).encode()
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    encoded = base64.b64encode(deflater.compress(xml) + deflater.flush()).decode()
    query = f"SAMLRequest={quote(encoded, safe='')}&RelayState=%2Frecords%2F42&SigAlg={quote(RSA_SHA256, safe='')}"
    signature = key.sign(query.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{query}&Signature={quote(base64.b64encode(signature).decode(), safe='')}".encode()


async def _provider(count: int, folder: Path) -> dict:
    from alacop.config import load_settings
    from alacop.core.authz import Actor
    from alacop.core.context import RequestContext
    from alacop.core.directory import Directory
    from alacop.core.passwords import PasswordHasher
    from alacop.core.session_manager import Current
    from alacop.protocols.saml.provider import SamlProvider
    from alacop.protocols.saml.registry import NewServiceProvider, ServiceProviders
    from alacop.protocols.saml.response import Answer
    from alacop.store.database import migrate_async
    from alacop.wiring import build_deps

    url = f"sqlite:///{folder / 'bench.db'}"
    await migrate_async(url)
    settings = load_settings(
        {
            "ALACOP_ENV": "development",
            "ALACOP_DATABASE_URL": url,
            "ALACOP_DATA_DIR": str(folder / "data"),
            "ALACOP_SECRET_KEY": secrets.token_urlsafe(40),
            "ALACOP_PUBLIC_URL": "http://127.0.0.1:8000",
        }
    )
    deps = build_deps(settings, hasher=PasswordHasher(memory_cost=1024, time_cost=1))
    ctx = RequestContext.system("bench")
    try:
        directory = Directory(deps)
        await directory.create_agency("AL0010000", "Montgomery County Sheriff's Office", ["mcso.al.gov"], ctx)
        user, _ = await directory.create_user(
            "cs0101",
            agency_ori="AL0010000",
            email="casey.smith@mcso.al.gov",
            name="Casey Smith",
            role=Role.USER,
            password=PASSWORD,
            ctx=ctx,
        )
        sp_cert, sp_key = generate(datetime.now(UTC))
        await ServiceProviders(deps).add(
            Actor.operator(),
            NewServiceProvider(
                name="Records Search",
                metadata=sp_metadata(SP_ENTITY, [ACS], authn_requests_signed=True, cert_pem=sp_cert),
            ),
            ctx,
        )
        provider = SamlProvider(deps)
        now = datetime.now(UTC)
        _, _, _, session = realistic(now)
        who = Current(session=session, user=user)
        browser = secrets.token_urlsafe(24)  # one browser, as a user signing in again and again
        queries = [_signed_query(provider.sso_url, sp_key, now) for _ in range(count + 20)]
        for query in queries[:20]:  # warm-up, and the signing certificate is made and cached
            assert isinstance(await provider.receive(query, who, ctx, browser), Answer)
        latencies: list[float] = []
        start, cpu_start = time.perf_counter(), time.process_time()
        for query in queries[20:]:
            t0 = time.perf_counter()
            answer = await provider.receive(query, who, ctx, browser)
            latencies.append(time.perf_counter() - t0)
            assert isinstance(answer, Answer)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        await deps.store.close()
        await deps.limiter.close()
    return {
        "count": count,
        "per_s": count / wall,
        "per_cpu_s": count / cpu if cpu else float("nan"),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
    }


def bench_provider(count: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="alacop_bench_saml_"))
    try:
        return asyncio.run(_provider(count, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time for (1) and (2) each (default 5)")
    parser.add_argument("--core", type=int, default=0, help="the one core to run on (default 0)")
    parser.add_argument(
        "--provider-requests", type=int, default=1000, help="AuthnRequests for (3); 0 skips it (default 1000)"
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    pin(args.core)

    cert_pem, key = generate(datetime.now(UTC))
    signer = Signer(fingerprint(cert_pem), cert_pem, key)
    key_bits = key.key_size

    print(f"pinned to core {args.core} (nproc {os.cpu_count()}); load average {os.getloadavg()[0]:.2f}", flush=True)
    print(f"(1) bare RSA-{key_bits} PKCS#1 v1.5 SHA-256 signs for {args.seconds:g} s ...", flush=True)
    rsa = bench_rsa(signer, args.seconds)
    print(f"(2) response.success(...) for {args.seconds:g} s ...", flush=True)
    responses, size = bench_responses(signer, args.seconds)
    provider = None
    if args.provider_requests > 0:
        print(f"(3) SamlProvider.receive(...) on SQLite, {args.provider_requests} requests ...", flush=True)
        provider = bench_provider(args.provider_requests)

    floor = rsa["per_s"] / 2
    ratio = responses["per_s"] / floor
    met = responses["per_s"] >= TARGET
    print()
    print("=== SAML Response signing, one core ===")
    print(
        f"(1) bare RSA-{key_bits} signs/s:    {rsa['per_s']:8.0f}   ({rsa['per_cpu_s']:.0f} per CPU s; "
        f"p50 {rsa['p50_ms']:.3f} ms, p99 {rsa['p99_ms']:.3f} ms)"
    )
    print(f"    ceiling at two signs per Response: {floor:.0f} Responses/s")
    print(
        f"(2) signed Responses/s:        {responses['per_s']:8.0f}   ({responses['per_cpu_s']:.0f} per CPU s; "
        f"p50 {responses['p50_ms']:.2f} ms, p99 {responses['p99_ms']:.2f} ms; {size} bytes of XML)"
    )
    print(f"    ratio Responses/s ÷ (RSA signs/s ÷ 2): {ratio:.2f}")
    print(f"    target ≥ {TARGET} Responses/s: {'PASS' if met else 'MISS'}")
    if provider is not None:
        print(
            f"(3) SamlProvider.receive/s:     {provider['per_s']:8.0f}   ({provider['per_cpu_s']:.0f} per CPU s; "
            f"p50 {provider['p50_ms']:.2f} ms, p99 {provider['p99_ms']:.2f} ms; SQLite, audited)"
        )
    if rsa["per_s"] < 0.9 * rsa["per_cpu_s"]:
        print(f"warning: core {args.core} was shared during the run (wall rate < 90 % of CPU rate); figures are low")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"rsa": rsa, "responses": responses, "response_bytes": size, "ratio": ratio, "provider": provider},
                indent=2,
            )
        )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
