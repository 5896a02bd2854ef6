"""`alacop …`: serve, migrate, demo, agencies, users, passwords and audit. Operators script against it."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import secrets
import shutil
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from alacop.config import Settings, ensure_secret, load_settings
from alacop.core.accounts import Role, UserStatus
from alacop.core.applications import Applications, NewApplication
from alacop.core.approvals import Approvals
from alacop.core.audit import AuditChain, AuditEvent, EventType, Outcome, verify_chain
from alacop.core.authz import Actor
from alacop.core.clock import parse_iso
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.directory import Directory
from alacop.core.errors import AlacopError, ConfigError
from alacop.core.maintenance import run_maintenance
from alacop.core.oidc import Client, validate_redirect_uri
from alacop.core.passwords import BannedList
from alacop.core.registration import RegistrationStatus
from alacop.core.saml import ServiceProvider
from alacop.protocols.saml import certs as saml_certs
from alacop.protocols.saml.metadata import MAX_METADATA, sp_metadata
from alacop.protocols.saml.registry import NewServiceProvider, ServiceProviders, public_view
from alacop.store.database import migrate
from alacop.wiring import banned_override, build_deps


def _operator_context() -> RequestContext:
    """Command-line actions name the operating-system account and host that ran them (CJIS AU-3)."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = f"uid-{os.getuid()}"
    return RequestContext(
        source_ip="local",
        user_agent=f"alacop-cli {who}@{socket.gethostname()}",
        request_id=secrets.token_hex(8),
    )


CTX = _operator_context()


class Fail(Exception):
    """A command failed for a reason the operator can act on; printed as one line."""


def _settings() -> Settings:
    return ensure_secret(load_settings())


async def _with_deps(settings: Settings, work: Callable[[Deps], Awaitable[int]]) -> int:
    deps = build_deps(settings)
    try:
        return await work(deps)
    finally:
        await deps.limiter.close()
        await deps.store.close()


def _run(settings: Settings, work: Callable[[Deps], Awaitable[int]]) -> int:
    return asyncio.run(_with_deps(settings, work))


# -- serve / migrate / demo --------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    settings = ensure_secret(_settings())
    migrate(settings.database_url)
    return _serve(settings, args.host, args.port, args.workers)


def _serve(settings: Settings, host: str, port: int, workers: int) -> int:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if settings.env == "test":
        logging.getLogger("alacop").warning("TEST MODE: ALACOP_ENV=test; never use this with real accounts")
    # Workers re-create the app from the environment, so hand them the settings we resolved.
    os.environ["ALACOP_SECRET_KEY"] = settings.secret_key
    os.environ["ALACOP_DATABASE_URL"] = settings.database_url
    os.environ["ALACOP_DATA_DIR"] = str(settings.data_dir)
    uvicorn.run(
        "alacop.web.asgi:app",
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        log_level="warning",
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings()
    migrate(settings.database_url)
    print("database is up to date")
    return 0


DEMO_ORI = "AL0000000"
DEMO_USER = "demo01"
DEMO_COORDINATOR = "democo"
DEMO_PASSWORD = "correct horse battery staple 2026"


# Where the demo application runs (./scripts/records-demo); the browser tests move it to a free port.
RECORDS_DEMO_URL = os.environ.get("RECORDS_DEMO_URL", "http://localhost:8001").rstrip("/")


async def _seed_records_demo(deps: Deps, settings: Settings) -> None:
    """Register the demo application once and leave its credentials where `./scripts/records-demo` reads them."""
    path = settings.data_dir / "records_demo.json"
    if path.is_file():
        try:
            known = json.loads(path.read_text(encoding="utf-8"))
            async with deps.store.read() as db:
                if await db.clients.get(str(known.get("client_id", ""))):
                    return
        except (OSError, ValueError):
            pass
    new = NewApplication(
        name="Records Search (demo)",
        redirect_uris=[f"{RECORDS_DEMO_URL}/callback"],
        post_logout_redirect_uris=[f"{RECORDS_DEMO_URL}/"],
        scopes=["openid", "profile", "email", "agency", "roles"],
        initiate_login_uri=f"{RECORDS_DEMO_URL}/login",
        backchannel_logout_uri=None,
    )
    client, secret = await Applications(deps).create(Actor.operator(), new, CTX)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(
            {
                "client_id": client.client_id,
                "client_secret": secret,
                "session_key": secrets.token_urlsafe(32),
                "portal": settings.public_url.rstrip("/"),
            },
            out,
        )


# Where the SAML demo application runs (./scripts/saml-demo); the browser tests move it too.
SAML_DEMO_URL = os.environ.get("SAML_DEMO_URL", "http://localhost:8002").rstrip("/")
SAML_DEMO_NAME = "Case Files (SAML demo)"


async def _seed_saml_demo(deps: Deps, settings: Settings) -> None:
    """Register the SAML demo application once and leave its key where `./scripts/saml-demo` reads it."""
    path = settings.data_dir / "saml_demo.json"
    entity_id = f"{SAML_DEMO_URL}/saml/metadata"
    if path.is_file():
        try:
            known = json.loads(path.read_text(encoding="utf-8"))
            async with deps.store.read() as db:
                if await db.saml_sps.by_entity_id(str(known.get("entity_id", ""))):
                    return
        except (OSError, ValueError):
            pass
    registry = ServiceProviders(deps)
    async with deps.store.read() as db:
        stale = await db.saml_sps.by_entity_id(entity_id)
    if stale is not None:
        # Registered before, but its key is gone with the file: retire that registration (an entity ID is
        # registered once, disabled or not) and register the new key under a fresh entity ID.
        if stale.disabled_at is None:
            await registry.disable(Actor.operator(), stale.id, CTX)
        entity_id = f"{entity_id}?v={secrets.token_hex(4)}"
    acs_url = f"{SAML_DEMO_URL}/saml/acs"
    cert_pem, key = saml_certs.generate(deps.clock.now(), SAML_DEMO_NAME)
    key_pem = saml_certs.private_pem(key).decode()
    new = NewServiceProvider(
        name=SAML_DEMO_NAME,
        metadata=sp_metadata(entity_id, [acs_url], cert_pem, authn_requests_signed=True),
        idp_initiated=True,
    )
    await registry.add(Actor.operator(), new, CTX)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(
            {
                "name": SAML_DEMO_NAME,
                "entity_id": entity_id,
                "acs_url": acs_url,
                "private_key": key_pem,
                "certificate": cert_pem,
                "portal": settings.public_url.rstrip("/"),
            },
            out,
        )


def cmd_demo(args: argparse.Namespace) -> int:
    # Browsers accept "localhost" as a WebAuthn relying party but never an IP address, so the demo
    # names itself localhost; http://127.0.0.1 still serves every page.
    os.environ.setdefault("ALACOP_PUBLIC_URL", f"http://localhost:{args.port}")
    settings = ensure_secret(_settings())
    migrate(settings.database_url)

    async def seed(deps: Deps) -> int:
        directory = Directory(deps)
        async with deps.store.transaction() as tx:
            agency = await tx.agencies.by_ori(DEMO_ORI)
            user = await tx.users.by_username(DEMO_USER)
        if agency is None:
            await directory.create_agency(DEMO_ORI, "Demo County Sheriff's Office", ["demo.al.gov"], CTX)
        if user is None:
            await directory.create_user(
                DEMO_USER,
                agency_ori=DEMO_ORI,
                email="demo01@demo.al.gov",
                name="Casey Demo",
                role=Role.USER,
                password=DEMO_PASSWORD,
                ctx=CTX,
            )
        async with deps.store.transaction() as tx:
            coordinator = await tx.users.by_username(DEMO_COORDINATOR)
        if coordinator is None:
            # Registration requests to the demo agency (@demo.al.gov) go to this coordinator's queue.
            coordinator, _ = await directory.create_user(
                DEMO_COORDINATOR,
                agency_ori=DEMO_ORI,
                email="democo@demo.al.gov",
                name="Dana Coordinator",
                role=Role.COORDINATOR,
                password=DEMO_PASSWORD,
                ctx=CTX,
            )
            async with deps.store.transaction() as tx:
                await tx.agencies.set_coordinators(coordinator.agency_id, [coordinator.id])
        await _seed_records_demo(deps, settings)
        await _seed_saml_demo(deps, settings)
        return 0

    _run(settings, seed)
    url = f"http://{args.host}:{args.port}"
    print(
        f"\nAlaCOP demo on {url} (security keys and passkeys: {settings.public_url})\n"
        f"  sign in as: {DEMO_USER}@{settings.branding.domain}\n"
        f"  password:   {DEMO_PASSWORD}\n"
        "  the first sign-in asks for a new password, then an authenticator app or security key\n"
        f"  agency coordinator (the /admin console): {DEMO_COORDINATOR}@{settings.branding.domain}, same password;\n"
        "    coordinators set up two kinds of method: an authenticator app and a security key or passkey\n"
        f"  New User Registration: use an @demo.al.gov email and agency {DEMO_ORI}\n"
        f"  mail the portal sends is saved in {settings.data_dir / 'outbox'}\n"
        f"  the demo application Records Search: ./scripts/records-demo, then {RECORDS_DEMO_URL}\n"
        f"  the SAML demo application Case Files: ./scripts/saml-demo, then {SAML_DEMO_URL}\n",
        flush=True,
    )
    return _serve(settings, args.host, args.port, 1)


# -- agencies / users --------------------------------------------------------------------------------
def cmd_agencies_create(args: argparse.Namespace) -> int:
    async def work(deps: Deps) -> int:
        agency = await Directory(deps).create_agency(args.ori, args.name, args.email_domain or [], CTX)
        print(f"created agency {agency.ori} {agency.name}")
        return 0

    return _run(_settings(), work)


def cmd_agencies_list(args: argparse.Namespace) -> int:
    async def work(deps: Deps) -> int:
        async with deps.store.transaction() as tx:
            agencies = await tx.agencies.list()
            await tx.audit.append(
                AuditEvent(EventType.AGENCIES_LISTED, Outcome.SUCCESS, details={"rows": len(agencies)}), CTX
            )
            for agency in agencies:
                print(f"{agency.ori}\t{agency.name}\t{','.join(agency.email_domains)}")
        return 0

    return _run(_settings(), work)


# -- authorized applications (OpenID Connect clients) ------------------------------------------------
def _client_json(client: Client) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "name": client.name,
        "client_type": str(client.client_type),
        "redirect_uris": list(client.redirect_uris),
        "post_logout_redirect_uris": list(client.post_logout_redirect_uris),
        "scopes": list(client.scopes),
        "require_aal2": client.require_aal2,
        "initiate_login_uri": client.initiate_login_uri,
        "access_token_format": str(client.access_token_format),
        "disabled": client.disabled_at is not None,
    }


def cmd_clients_create(args: argparse.Namespace) -> int:
    async def work(deps: Deps) -> int:
        new = NewApplication(
            name=args.name,
            redirect_uris=args.redirect_uri or [],
            post_logout_redirect_uris=args.post_logout_uri or [],
            public=args.public,
            scopes=args.scope,
            require_aal2=True,
            initiate_login_uri=args.initiate_login_uri,
            logo_url=args.logo_url,
            backchannel_logout_uri=args.backchannel_logout_uri,
            access_token_format=args.access_token_format,
            access_token_seconds=args.access_token_seconds,
            refresh_token_seconds=args.refresh_token_seconds,
            agency_oris=args.agency,
        )
        client, secret = await Applications(deps).create(Actor.operator(), new, CTX)
        if args.json:
            print(json.dumps({"client_id": client.client_id, "client_secret": secret}))
        else:
            print(f"client_id:     {client.client_id}")
            if secret:
                print(f"client_secret: {secret}")
                print("The secret is shown only now; it is stored hashed. Keep it in the application's vault.")
        return 0

    return _run(_settings(), work)


def cmd_clients_list(args: argparse.Namespace) -> int:
    async def work(deps: Deps) -> int:
        clients = await Applications(deps).registered(Actor.operator())
        if args.json:
            print(json.dumps([_client_json(c) for c in clients], indent=2))
        else:
            for c in clients:
                state = "disabled" if c.disabled_at else "enabled"
                print(f"{c.client_id}\t{c.name}\t{c.client_type}\t{state}\t{' '.join(c.redirect_uris)}")
        return 0

    return _run(_settings(), work)


def cmd_clients_disable(args: argparse.Namespace) -> int:
    async def work(deps: Deps) -> int:
        client = await Applications(deps).disable(Actor.operator(), args.client_id, CTX)
        print(f"disabled {client.client_id} ({client.name})")
        return 0

    return _run(_settings(), work)


def cmd_clients_rotate_secret(args: argparse.Namespace) -> int:
    async def work(deps: Deps) -> int:
        client, secret = await Applications(deps).rotate_secret(Actor.operator(), args.client_id, CTX)
        if args.json:
            print(json.dumps({"client_id": client.client_id, "client_secret": secret}))
        else:
            print(f"client_secret: {secret}")
            print("The old secret no longer works. The new one is shown only now.")
        return 0

    return _run(_settings(), work)


# -- registration requests ---------------------------------------------------------------------------
def cmd_registrations_list(args: argparse.Namespace) -> int:
    async def work(deps: Deps) -> int:
        status = None if args.status == "all" else RegistrationStatus(args.status)
        requests = await Approvals(deps).queue(Actor.operator(), status)
        async with deps.store.read() as db:
            oris = {a.id: a.ori for a in await db.agencies.list()}
        rows = [
            {
                "id": r.id,
                "status": str(r.status),
                "agency": oris.get(r.agency_id, "?"),
                "name": r.application.full_name,
                "email": r.application.email,
                "created_at": r.created_at.isoformat(),
            }
            for r in requests
        ]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                print("\t".join(row[k] for k in ("id", "status", "agency", "name", "email", "created_at")))
        return 0

    return _run(_settings(), work)


def cmd_registrations_approve(args: argparse.Namespace) -> int:
    async def work(deps: Deps) -> int:
        user = await Approvals(deps).approve(Actor.operator(), args.id, CTX)
        print(f"approved: account {user.username} created; the activation link was emailed to {user.email}")
        return 0

    return _run(_settings(), work)


def cmd_registrations_deny(args: argparse.Namespace) -> int:
    async def work(deps: Deps) -> int:
        await Approvals(deps).deny(Actor.operator(), args.id, args.reason, CTX)
        print("denied; the applicant was emailed the reason")
        return 0

    return _run(_settings(), work)


def cmd_users_create(args: argparse.Namespace) -> int:
    password = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise Fail("no password on standard input")

    async def work(deps: Deps) -> int:
        user, generated = await Directory(deps).create_user(
            args.username,
            agency_ori=args.agency,
            email=args.email,
            name=args.name or "",
            role=Role(args.role),
            password=password,
            ctx=CTX,
        )
        print(f"created user {user.username} ({user.role}) in agency {args.agency.upper()}")
        if generated:
            print(f"temporary password: {generated}")
        print("the first sign-in must set a new password")
        return 0

    return _run(_settings(), work)


def cmd_users_unlock(args: argparse.Namespace) -> int:
    async def work(deps: Deps) -> int:
        was_locked = await Directory(deps).unlock(args.username, CTX)
        print(f"unlocked {args.username}" if was_locked else f"{args.username} was not locked; counters cleared")
        return 0

    return _run(_settings(), work)


def _status_cmd(status: UserStatus) -> Callable[[argparse.Namespace], int]:
    def cmd(args: argparse.Namespace) -> int:
        async def work(deps: Deps) -> int:
            await Directory(deps).set_status(args.username, status, CTX)
            print(f"{args.username} is {status}")
            return 0

        return _run(_settings(), work)

    return cmd


def cmd_users_reset_methods(args: argparse.Namespace) -> int:
    async def work(deps: Deps) -> int:
        methods, codes = await Directory(deps).reset_methods(args.username, args.note, CTX)
        print(
            f"removed {methods} methods and {codes} recovery codes of {args.username}; "
            "the next sign-in sets up new ones"
        )
        return 0

    return _run(_settings(), work)


def cmd_users_delete(args: argparse.Namespace) -> int:
    if args.username != args.confirm:
        print("alacop: repeat the username with --confirm to delete the account", file=sys.stderr)
        return 2

    async def work(deps: Deps) -> int:
        user = await Directory(deps).delete_user(args.username, CTX)
        reuse = deps.policy.identifier_reuse_days
        print(f"deleted {user.username}; the username is not given out again for {reuse} days")
        return 0

    return _run(_settings(), work)


def cmd_users_list(args: argparse.Namespace) -> int:
    async def work(deps: Deps) -> int:
        rows = await Directory(deps).users(args.agency)
        async with deps.store.transaction() as tx:
            await tx.audit.append(
                AuditEvent(
                    EventType.ACCOUNTS_LISTED,
                    Outcome.SUCCESS,
                    details={"agency": args.agency, "rows": len(rows)},
                ),
                CTX,
            )
        print("username\trole\tstatus\tagency\tlast sign-in")
        for user, agency in rows:
            last = user.last_login_at.isoformat(timespec="seconds") if user.last_login_at else "never"
            print(f"{user.username}\t{user.role}\t{user.status}\t{agency.ori if agency else '?'}\t{last}")
        return 0

    return _run(_settings(), work)


# -- passwords ---------------------------------------------------------------------------------------
def cmd_passwords_update_banned(args: argparse.Namespace) -> int:
    settings = _settings()
    source = Path(args.file)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Fail(f"cannot read {source}: {exc}") from exc
    banned = BannedList.parse(text)
    if len(banned) < 1000:
        raise Fail(f"{source} has only {len(banned)} entries; a banned list needs at least 1000")
    target = banned_override(settings)
    target.parent.mkdir(parents=True, exist_ok=True)

    async def work(deps: Deps) -> int:
        async with deps.store.transaction() as tx:
            await tx.audit.append(
                AuditEvent(EventType.BANNED_LIST_UPDATED, Outcome.SUCCESS, details={"entries": len(banned)}),
                CTX,
            )
            # Replaced inside the transaction: if the file cannot be written, the event rolls back.
            tmp = target.with_suffix(".tmp")
            shutil.copyfile(source, tmp)
            tmp.replace(target)
        return 0

    _run(settings, work)
    print(f"banned list replaced: {len(banned)} entries; restart the portal to load it")
    return 0


# -- stored secrets ----------------------------------------------------------------------------------
def cmd_secrets_new_key(args: argparse.Namespace) -> int:
    from cryptography.fernet import Fernet

    print(Fernet.generate_key().decode("ascii"))
    return 0


def cmd_secrets_reseal(args: argparse.Namespace) -> int:
    """Re-encrypt every stored secret under the first of the configured keys (key rotation)."""

    async def work(deps: Deps) -> int:
        count = 0
        async with deps.store.transaction() as tx:
            for user in await tx.users.list():
                for method in await tx.methods.for_user(user.id):
                    if method.totp_secret:
                        await tx.methods.reseal(method.id, deps.box.reseal(method.totp_secret))
                        count += 1
            # The token signing keys and SAML signing keys are sealed with the same keys.
            for key in await tx.signing_keys.list():
                await tx.signing_keys.reseal(key.kid, deps.box.reseal(key.private_sealed))
                count += 1
            for cert in await tx.saml_certs.list():
                await tx.saml_certs.reseal(cert.id, deps.box.reseal(cert.private_sealed))
                count += 1
            await tx.audit.append(
                AuditEvent(EventType.SECRETS_RESEALED, Outcome.SUCCESS, details={"secrets": count}), CTX
            )
        print(f"resealed {count} secrets under the first key; older keys can now be removed")
        return 0

    return _run(_settings(), work)


# -- signing keys (OpenID Connect) -------------------------------------------------------------------
def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """New ES256 and RS256 signing keys; the old ones stay published until their tokens have expired."""
    from alacop.protocols.oidc.keys import rotate

    async def work(deps: Deps) -> int:
        added = await rotate(deps, CTX)
        for key in added:
            print(f"{key.alg} {key.kid}")
        return 0

    return _run(_settings(), work)


# -- SAML ----------------------------------------------------------------------------------------------
def _metadata_bytes(source: str) -> bytes:
    """Metadata from a file, or from an https address (http only for this machine), size-capped."""
    if source.startswith(("https://", "http://")):
        url = validate_redirect_uri(source)
        with httpx.stream("GET", url, timeout=10.0, follow_redirects=False) as answer:
            answer.raise_for_status()
            body = b""
            for chunk in answer.iter_bytes():
                body += chunk
                if len(body) > MAX_METADATA:
                    break
        return body
    with open(source, "rb") as handle:
        return handle.read(MAX_METADATA + 1)


def _sp_json(sp: ServiceProvider) -> dict[str, object]:
    return {"id": sp.id, **public_view(sp)}


def cmd_saml_sps_add(args: argparse.Namespace) -> int:
    try:
        metadata = _metadata_bytes(args.metadata)
    except (OSError, httpx.HTTPError, AlacopError) as exc:
        print(f"error: could not read the metadata ({type(exc).__name__})", file=sys.stderr)
        return 2

    async def work(deps: Deps) -> int:
        new = NewServiceProvider(
            name=args.name,
            metadata=metadata,
            attributes=args.attribute,
            require_aal2=True,
            nameid=args.nameid,
            idp_initiated=args.idp_initiated,
            relay_state=args.relay_state,
            logo_url=args.logo_url,
            start_url=args.start_url,
            agency_oris=args.agency,
        )
        sp = await ServiceProviders(deps).add(Actor.operator(), new, CTX)
        if args.json:
            print(json.dumps(_sp_json(sp)))
        else:
            print(f"id:        {sp.id}")
            print(f"entity_id: {sp.entity_id}")
            print(f"consumers: {' '.join(a.url for a in sp.acs)}")
        return 0

    return _run(_settings(), work)


def cmd_saml_sps_list(args: argparse.Namespace) -> int:
    async def work(deps: Deps) -> int:
        sps = await ServiceProviders(deps).registered(Actor.operator())
        if args.json:
            print(json.dumps([_sp_json(sp) for sp in sps], indent=2))
        else:
            for sp in sps:
                state = "disabled" if sp.disabled_at else "enabled"
                print(f"{sp.id}\t{sp.name}\t{sp.entity_id}\t{state}")
        return 0

    return _run(_settings(), work)


def cmd_saml_sps_disable(args: argparse.Namespace) -> int:
    async def work(deps: Deps) -> int:
        sp = await ServiceProviders(deps).disable(Actor.operator(), args.sp_id, CTX)
        print(f"disabled {sp.id} ({sp.name})")
        return 0

    return _run(_settings(), work)


def cmd_saml_cert_rotate(args: argparse.Namespace) -> int:
    """A new signing certificate, published now, signing after the overlap; the old retire a day later."""
    if args.overlap_days < 0 or args.overlap_days > 90:
        print("error: --overlap-days is 0 to 90", file=sys.stderr)
        return 2

    async def work(deps: Deps) -> int:
        added = await saml_certs.rotate(deps, CTX, timedelta(days=args.overlap_days), retire_now=args.retire_now)
        print(f"added {added.id}; it signs from {added.active_from.isoformat()}")
        print("Applications that pin the certificate should add the new one from /saml/metadata before then.")
        return 0

    return _run(_settings(), work)


def cmd_saml_cert_list(args: argparse.Namespace) -> int:
    async def work(deps: Deps) -> int:
        for cert in await saml_certs.CertRing(deps).published():
            until = cert.retire_after.isoformat() if cert.retire_after else "-"
            print(f"{cert.id}\tsigns from {cert.active_from.isoformat()}\tpublished until {until}")
        return 0

    return _run(_settings(), work)


# -- help center -------------------------------------------------------------------------------------
# -- audit -------------------------------------------------------------------------------------------
def cmd_audit_verify(args: argparse.Namespace) -> int:
    settings = _settings()

    async def work(deps: Deps) -> int:
        reader = deps.store.audit_reader
        records = [r async for r in reader.records()]
        result = verify_chain(records, AuditChain(settings.audit_key), head=await reader.head())
        async with deps.store.transaction() as tx:
            await tx.audit.append(
                AuditEvent(
                    EventType.AUDIT_VERIFIED,
                    Outcome.SUCCESS if result.ok else Outcome.FAILURE,
                    "" if result.ok else "chain_broken",
                    details={"checked": result.checked, "first_bad_seq": result.first_bad_seq},
                ),
                CTX,
            )
        if result.ok:
            print(f"audit chain intact: {result.checked} records")
            return 0
        print(f"audit chain broken at record {result.first_bad_seq}: {result.problem}", file=sys.stderr)
        return 1

    return _run(settings, work)


def cmd_audit_export(args: argparse.Namespace) -> int:
    since = _when(args.since, "--since")
    until = _when(args.until, "--until")

    async def work(deps: Deps) -> int:
        out = sys.stdout
        count = 0
        async for record in deps.store.audit_reader.records(since, until):
            out.write(json.dumps(record.as_dict(), separators=(",", ":")) + "\n")
            count += 1
        out.flush()
        async with deps.store.transaction() as tx:
            await tx.audit.append(
                AuditEvent(
                    EventType.AUDIT_EXPORTED,
                    Outcome.SUCCESS,
                    details={"since": args.since, "until": args.until, "records": count},
                ),
                CTX,
            )
        return 0

    return _run(_settings(), work)


def _when(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError as exc:
        raise Fail(f"{flag}: not an ISO 8601 time: {value!r}") from exc


# -- maintenance -------------------------------------------------------------------------------------
def cmd_maintenance(args: argparse.Namespace) -> int:
    """Account upkeep (CJIS AC-2(3), training); `serve` runs the same every hour. Safe to run again."""

    async def work(deps: Deps) -> int:
        report = await run_maintenance(deps, CTX)
        counts = report.as_dict()
        if args.json:
            print(json.dumps(counts, sort_keys=True))
        else:
            for name, value in counts.items():
                print(f"{name}: {value}")
        if report.errors:
            print(f"alacop: {report.errors} accounts or steps failed; see the log", file=sys.stderr)
            return 1
        return 0

    return _run(_settings(), work)


# -- parser ------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alacop", description="AlaCOP Portal")
    sub = parser.add_subparsers(dest="command", required=True)

    def serve_args(p: argparse.ArgumentParser, workers: bool = True) -> None:
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        if workers:
            p.add_argument("--workers", type=int, default=1)

    p = sub.add_parser("serve", help="run the portal")
    serve_args(p)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("migrate", help="upgrade the database")
    p.set_defaults(func=cmd_migrate)
    p = sub.add_parser("demo", help="migrate, seed demo data and serve")
    serve_args(p, workers=False)
    p.set_defaults(func=cmd_demo)

    agencies = sub.add_parser("agencies").add_subparsers(dest="action", required=True)
    p = agencies.add_parser("create")
    p.add_argument("ori")
    p.add_argument("name")
    p.add_argument("--email-domain", action="append")
    p.set_defaults(func=cmd_agencies_create)
    agencies.add_parser("list").set_defaults(func=cmd_agencies_list)

    clients = sub.add_parser("clients", help="authorized applications (OpenID Connect)").add_subparsers(
        dest="action", required=True
    )
    p = clients.add_parser("create", help="register an application; prints its client_id and secret once")
    p.add_argument("name")
    p.add_argument("--redirect-uri", action="append", required=True, help="exact; repeat for several")
    p.add_argument("--post-logout-uri", action="append")
    p.add_argument("--public", action="store_true", help="a browser or native app: PKCE, no secret")
    p.add_argument("--scope", action="append", help="openid, profile, email, agency, roles, offline_access")
    p.add_argument("--require-aal2", action="store_true", help="the default: every AlaCOP sign-in is AAL2")
    p.add_argument("--initiate-login-uri", help="where My applications sends the user to start signing in")
    p.add_argument("--logo-url")
    p.add_argument("--backchannel-logout-uri")
    p.add_argument("--access-token-format", choices=["jwt", "opaque"], default="jwt")
    p.add_argument("--access-token-seconds", type=int, default=300, help="60-3600 (default 300)")
    p.add_argument("--refresh-token-seconds", type=int, default=8 * 3600, help="300-2592000 (default 8 hours)")
    p.add_argument("--agency", action="append", metavar="ORI", help="only these agencies' users (repeat)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_clients_create)
    p = clients.add_parser("list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_clients_list)
    p = clients.add_parser("disable")
    p.add_argument("client_id")
    p.set_defaults(func=cmd_clients_disable)
    p = clients.add_parser("rotate-secret")
    p.add_argument("client_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_clients_rotate_secret)

    registrations = sub.add_parser("registrations", help="New User Registration requests").add_subparsers(
        dest="action", required=True
    )
    p = registrations.add_parser("list")
    p.add_argument("--status", choices=[*(str(s) for s in RegistrationStatus), "all"], default="pending")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_registrations_list)
    p = registrations.add_parser("approve", help="create the account and email its activation link")
    p.add_argument("id")
    p.set_defaults(func=cmd_registrations_approve)
    p = registrations.add_parser("deny", help="refuse the request; the applicant is emailed the reason")
    p.add_argument("id")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_registrations_deny)

    users = sub.add_parser("users").add_subparsers(dest="action", required=True)
    p = users.add_parser("create")
    p.add_argument("username")
    p.add_argument("--agency", required=True)
    p.add_argument("--email", required=True)
    p.add_argument("--name")
    p.add_argument("--role", choices=[r.value for r in Role], default="user")
    p.add_argument("--password-stdin", action="store_true")
    p.set_defaults(func=cmd_users_create)
    for action, func in (
        ("unlock", cmd_users_unlock),
        ("disable", _status_cmd(UserStatus.DISABLED)),
        ("enable", _status_cmd(UserStatus.ACTIVE)),
    ):
        p = users.add_parser(action)
        p.add_argument("username")
        p.set_defaults(func=func)
    p = users.add_parser("reset-methods", help="remove all second factors after re-proofing identity")
    p.add_argument("username")
    p.add_argument("--note", required=True, help="how the user's identity was re-proofed")
    p.set_defaults(func=cmd_users_reset_methods)
    p = users.add_parser("delete", help="remove an account; its username is retired for a year")
    p.add_argument("username")
    p.add_argument("--confirm", required=True, metavar="USERNAME", help="the username again")
    p.set_defaults(func=cmd_users_delete)
    p = users.add_parser("list")
    p.add_argument("--agency")
    p.set_defaults(func=cmd_users_list)

    passwords = sub.add_parser("passwords").add_subparsers(dest="action", required=True)
    p = passwords.add_parser("update-banned")
    p.add_argument("file")
    p.set_defaults(func=cmd_passwords_update_banned)

    secrets_cmd = sub.add_parser("secrets", help="keys that encrypt stored secrets").add_subparsers(
        dest="action", required=True
    )
    secrets_cmd.add_parser("new-key", help="print a new encryption key").set_defaults(func=cmd_secrets_new_key)
    secrets_cmd.add_parser("reseal", help="re-encrypt stored secrets under the first key").set_defaults(
        func=cmd_secrets_reseal
    )

    keys_cmd = sub.add_parser("keys", help="OpenID Connect signing keys").add_subparsers(dest="action", required=True)
    keys_cmd.add_parser(
        "rotate", help="new signing keys; the old stay published until their tokens expire"
    ).set_defaults(func=cmd_keys_rotate)

    saml_cmd = sub.add_parser("saml", help="SAML 2.0 applications and signing certificates").add_subparsers(
        dest="area", required=True
    )
    sps = saml_cmd.add_parser("sps", help="registered SAML applications").add_subparsers(dest="action", required=True)
    p = sps.add_parser("add", help="register an application from its SAML metadata")
    p.add_argument("name")
    p.add_argument("--metadata", required=True, metavar="FILE_OR_URL", help="a file, or an https address")
    p.add_argument(
        "--attribute",
        action="append",
        help="released attributes (repeat): username, email, name, agencyName, agencyOri, roles, aal, amr "
        "(default: all)",
    )
    p.add_argument("--require-aal2", action="store_true", help="the default: every AlaCOP sign-in is AAL2")
    p.add_argument("--nameid", choices=["persistent", "email"], default="persistent")
    p.add_argument("--idp-initiated", action="store_true", help="may be started from My applications")
    p.add_argument("--relay-state", help="the RelayState of IdP-initiated sign-ins")
    p.add_argument("--start-url", help="where My applications sends the user (SP-initiated applications)")
    p.add_argument("--logo-url")
    p.add_argument("--agency", action="append", metavar="ORI", help="only these agencies' users (repeat)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_saml_sps_add)
    p = sps.add_parser("list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_saml_sps_list)
    p = sps.add_parser("disable")
    p.add_argument("sp_id")
    p.set_defaults(func=cmd_saml_sps_disable)
    cert = saml_cmd.add_parser("cert", help="the portal's signing certificates").add_subparsers(
        dest="action", required=True
    )
    p = cert.add_parser("rotate", help="a new certificate, published now, signing after the overlap")
    p.add_argument("--overlap-days", type=int, default=7, help="0-90 (default 7; 0 for a compromised key)")
    p.add_argument(
        "--retire-now",
        action="store_true",
        help="drop the old certificates from the metadata as soon as the new one signs (a leaked key)",
    )
    p.set_defaults(func=cmd_saml_cert_rotate)
    cert.add_parser("list", help="published certificates").set_defaults(func=cmd_saml_cert_list)

    help_cmd = sub.add_parser("help", help="the help center").add_subparsers(dest="action", required=True)
    # Handled in main() before parsing; listed here so `alacop --help` shows it.
    help_cmd.add_parser("build", help="record tutorials and screenshots in headless Chromium (see docs)")

    p = sub.add_parser("maintenance", help="disable inactive or untrained accounts, warn, expire requests")
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    p.set_defaults(func=cmd_maintenance)

    audit = sub.add_parser("audit").add_subparsers(dest="action", required=True)
    audit.add_parser("verify").set_defaults(func=cmd_audit_verify)
    p = audit.add_parser("export")
    p.add_argument("--since")
    p.add_argument("--until")
    p.set_defaults(func=cmd_audit_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:2] == ["help", "build"]:
        # The recorder has its own options (--out, --only, ...): hand them over untouched.
        from alacop.help import build

        return int(build.main(raw[2:]))
    args = build_parser().parse_args(raw)
    try:
        result: Any = args.func(args)
    except (ConfigError, AlacopError, Fail) as exc:
        print(f"alacop: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"alacop: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
