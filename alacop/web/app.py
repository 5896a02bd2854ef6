"""The Starlette application: wiring, error pages and the route table. Routes stay thin."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import mimetypes
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Scope

from alacop.config import Settings, ensure_secret
from alacop.core.approvals import Approvals
from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.clock import Clock
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.directory import Directory
from alacop.core.errors import AlacopError
from alacop.core.housekeeping import purge_expired_flows, purge_expired_saml_requests
from alacop.core.mail import Mailer
from alacop.core.maintenance import maintenance_context, run_maintenance
from alacop.core.passwords import PasswordHasher
from alacop.core.ports import RateLimiter
from alacop.core.session_manager import SessionManager
from alacop.flows.login import LoginService
from alacop.flows.recovery import RecoveryService
from alacop.flows.registration import RegistrationService
from alacop.help.content import STATIC as HELP_STATIC
from alacop.help.content import HelpCenter
from alacop.protocols.oidc.provider import Provider
from alacop.protocols.saml.provider import SamlProvider
from alacop.web import http
from alacop.web.middleware import ApiRoutes, PortalMiddleware, PublicDocument, PublicDocuments
from alacop.web.render import error_page
from alacop.web.routes import account, admin, login, oidc, pages, recover, register, saml, security
from alacop.web.routes import help as help_routes
from alacop.wiring import build_deps

log = logging.getLogger("alacop")
# Caption tracks must be served as text/vtt, or browsers ignore them.
mimetypes.add_type("text/vtt", ".vtt")
mimetypes.add_type("video/webm", ".webm")
HERE = Path(__file__).parent


@dataclass
class Portal:
    settings: Settings
    deps: Deps
    login: LoginService
    recovery: RecoveryService
    sessions: SessionManager
    approvals: Approvals
    directory: Directory
    registration: RegistrationService
    help: HelpCenter
    oidc: Provider
    saml: SamlProvider
    templates: Jinja2Templates
    proxy_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    # Read on every request; settings derive them by parsing the public URL, so keep them here.
    secure_cookies: bool = True
    cookie_prefix: str = "__Host-"

    async def audit(self, event: AuditEvent, request: Request) -> None:
        async with self.deps.store.transaction() as tx:
            await tx.audit.append(event, http.context(request))


HOUSEKEEPING_SECONDS = 300


async def _housekeeping(deps: Deps) -> None:
    while True:
        await asyncio.sleep(HOUSEKEEPING_SECONDS)
        try:
            await purge_expired_flows(deps)
            await purge_expired_saml_requests(deps)
        except Exception:  # upkeep must never take the portal down; the next round retries
            log.exception("housekeeping failed")


# Account upkeep (core/maintenance.py): first shortly after start, then hourly. Every instance runs it;
# the run is idempotent and each account is decided under its row lock, so instances need no coordination.
MAINTENANCE_FIRST_SECONDS = 60.0
MAINTENANCE_JITTER_SECONDS = 60.0
MAINTENANCE_SECONDS = 3600.0


async def _maintenance(deps: Deps) -> None:
    # A random offset keeps instances started together from running at the same moment.
    await asyncio.sleep(MAINTENANCE_FIRST_SECONDS + random.uniform(0, MAINTENANCE_JITTER_SECONDS))  # noqa: S311
    while True:
        try:
            report = await run_maintenance(deps, maintenance_context("serve"))
            log.info("maintenance: %s", " ".join(f"{k}={v}" for k, v in report.as_dict().items()))
        except Exception:  # upkeep must never take the portal down; the next round retries
            log.exception("maintenance failed")
        await asyncio.sleep(MAINTENANCE_SECONDS)


# Back-channel logout for sessions ended in bulk (disable, lock, reset): every instance sweeps the notices
# the core left on the revoked tokens; a claim by conditional update sends each exactly once.
LOGOUT_SWEEP_SECONDS = 10.0


async def _logout_sweep(provider: Provider) -> None:
    ctx = RequestContext(source_ip="local", user_agent="alacop-serve back-channel logout", request_id="")
    while True:
        await asyncio.sleep(LOGOUT_SWEEP_SECONDS)
        try:
            await provider.sweep_logouts(ctx)
        except Exception:  # never take the portal down; the notices stay for the next sweep
            log.exception("back-channel logout sweep failed")


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    limiter: RateLimiter | None = None,
    hasher: PasswordHasher | None = None,
    mailer: Mailer | None = None,
) -> Starlette:
    settings = ensure_secret(settings)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    # Guides are read and rendered once; a changed guide needs a restart, like any other code.
    help_center = HelpCenter.load()
    templates.env.globals["brand"] = settings.branding
    templates.env.globals["test_mode"] = settings.env == "test"

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        deps = build_deps(settings, clock=clock, limiter=limiter, hasher=hasher, mailer=mailer)
        approvals = Approvals(deps)
        app.state.portal = Portal(
            settings=settings,
            deps=deps,
            login=LoginService(deps),
            recovery=RecoveryService(deps),
            sessions=SessionManager(deps),
            approvals=approvals,
            directory=Directory(deps),
            registration=RegistrationService(deps, approvals),
            help=help_center,
            oidc=Provider(deps),
            saml=SamlProvider(deps),
            templates=templates,
            proxy_networks=tuple(ipaddress.ip_network(n) for n in settings.trusted_proxies),
            secure_cookies=settings.secure_cookies,
            cookie_prefix=settings.cookie_prefix,
        )
        upkeep = asyncio.create_task(_housekeeping(deps))
        accounts_upkeep = asyncio.create_task(_maintenance(deps))
        logout_sweep = asyncio.create_task(_logout_sweep(app.state.portal.oidc))
        try:
            yield
        finally:
            for task in (upkeep, accounts_upkeep, logout_sweep):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # Back-channel logouts in flight get a moment to finish; the rest are cancelled.
            await app.state.portal.oidc.close()
            await deps.limiter.close()
            await deps.store.close()

    routes = [
        # Applications' servers call these many times a second: POSTs to the first three and userinfo
        # are answered by ApiRoutes before the router; the router keeps them for the other methods.
        Route("/oauth/token", oidc.token, methods=["POST"]),
        Route("/oauth/userinfo", oidc.userinfo, methods=["GET", "POST"]),
        Route("/oauth/revoke", oidc.revoke, methods=["POST"]),
        Route("/oauth/token", oidc.preflight, methods=["OPTIONS"]),
        Route("/oauth/userinfo", oidc.preflight, methods=["OPTIONS"]),
        Route("/oauth/revoke", oidc.preflight, methods=["OPTIONS"]),
        Route("/oauth/introspect", oidc.introspect, methods=["POST"]),
        Route("/oauth/logout", oidc.end_session, methods=["GET", "POST"]),
        Route("/", pages.home),
        Route("/login", login.page, methods=["GET"]),
        Route("/login/identifier", login.identifier, methods=["POST"]),
        Route("/login/password", login.password, methods=["POST"]),
        Route("/login/change-identifier", login.change_identifier, methods=["POST"]),
        Route("/login/new-password", login.new_password, methods=["POST"]),
        Route("/login/method", login.method, methods=["POST"]),
        Route("/login/second-factor", login.second_factor, methods=["POST"]),
        Route("/login/enroll/choose", login.enroll_choose, methods=["POST"]),
        Route("/login/enroll", login.enroll, methods=["POST"]),
        Route("/login/recovery-codes", login.recovery_codes, methods=["POST"]),
        Route("/login/options", login.options, methods=["GET"]),
        Route("/login/passkey", login.passkey, methods=["POST"]),
        Route("/logout", account.logout, methods=["POST"]),
        Route("/apps", account.apps, methods=["GET"]),
        Route("/account/password", account.password_page, methods=["GET"]),
        Route("/account/password", account.password_submit, methods=["POST"]),
        Route("/account/security", security.page, methods=["GET"]),
        Route("/account/security/rename", security.rename, methods=["POST"]),
        Route("/account/security/remove", security.remove, methods=["POST"]),
        Route("/account/security/recovery-codes", security.recovery_codes, methods=["POST"]),
        Route("/account/security/sessions/end-others", security.end_others, methods=["POST"]),
        Route("/account/security/add", security.add_post, methods=["POST"]),
        Route("/account/security/add", security.add_page, methods=["GET"]),
        Route("/account/reauth", security.reauth_page, methods=["GET"]),
        Route("/account/reauth", security.reauth_submit, methods=["POST"]),
        Route("/recover", recover.page, methods=["GET"]),
        Route("/recover/type", recover.account_type, methods=["POST"]),
        Route("/recover/identify", recover.identify, methods=["POST"]),
        Route("/recover/captcha/new", recover.new_captcha, methods=["POST"]),
        Route("/recover/captcha.png", recover.captcha_picture, methods=["GET"]),
        Route("/recover/captcha.wav", recover.captcha_audio, methods=["GET"]),
        Route("/recover/method", recover.method, methods=["POST"]),
        Route("/recover/verify", recover.verify, methods=["POST"]),
        Route("/recover/choose", recover.choose, methods=["POST"]),
        Route("/recover/password", recover.new_password, methods=["POST"]),
        Route("/recover/unlock", recover.unlock, methods=["POST"]),
        Route("/admin", admin.home, methods=["GET"]),
        Route("/admin/users", admin.users, methods=["GET"]),
        Route("/admin/users/{user_id}", admin.user, methods=["GET"]),
        Route("/admin/users/{user_id}/unlock", admin.unlock, methods=["POST"]),
        Route("/admin/users/{user_id}/disable", admin.disable, methods=["POST"]),
        Route("/admin/users/{user_id}/enable", admin.enable, methods=["POST"]),
        Route("/admin/users/{user_id}/reset-methods", admin.reset_methods, methods=["POST"]),
        Route("/admin/users/{user_id}/activation-link", admin.activation_link, methods=["POST"]),
        Route("/admin/users/{user_id}/training", admin.training, methods=["POST"]),
        Route("/admin/users/{user_id}/end-sessions", admin.end_sessions, methods=["POST"]),
        Route("/admin/users/{user_id}/role", admin.role, methods=["POST"]),
        Route("/admin/requests", admin.requests, methods=["GET"]),
        Route("/admin/requests/{registration_id}", admin.request_page, methods=["GET"]),
        Route("/admin/requests/{registration_id}/approve", admin.approve, methods=["POST"]),
        Route("/admin/requests/{registration_id}/deny", admin.deny, methods=["POST"]),
        Route("/admin/agencies", admin.agencies, methods=["GET"]),
        Route("/admin/agencies", admin.create_agency, methods=["POST"]),
        Route("/admin/agencies/{agency_id}", admin.agency, methods=["GET"]),
        Route("/admin/agencies/{agency_id}", admin.update_agency, methods=["POST"]),
        Route("/admin/agencies/{agency_id}/coordinators", admin.coordinators, methods=["POST"]),
        Route("/admin/applications", admin.applications, methods=["GET"]),
        Route("/admin/applications", admin.create_application, methods=["POST"]),
        Route("/admin/applications/saml", admin.saml_applications, methods=["GET"]),
        Route("/admin/applications/saml", admin.create_saml_application, methods=["POST"]),
        Route("/admin/applications/saml/{sp_id}/disable", admin.disable_saml_application, methods=["POST"]),
        Route("/admin/applications/{client_id}/disable", admin.disable_application, methods=["POST"]),
        Route("/admin/applications/{client_id}/rotate-secret", admin.rotate_application_secret, methods=["POST"]),
        Route("/admin/policy", admin.policy, methods=["GET"]),
        Route("/saml/metadata", saml.metadata, methods=["GET"]),
        Route("/saml/sso", saml.sso, methods=["GET"]),
        Route("/saml/sso", saml.sso_post, methods=["POST"]),
        Route("/saml/continue", saml.resume, methods=["GET"]),
        Route("/saml/start/{sp_id}", saml.start, methods=["GET"]),
        Route("/admin/audit", admin.audit, methods=["GET"]),
        Route("/admin/audit/export", admin.export, methods=["POST"]),
        Route("/admin/audit/verify", admin.verify, methods=["GET"]),
        Route("/.well-known/openid-configuration", oidc.discovery, methods=["GET"]),
        Route("/oauth/jwks", oidc.jwks, methods=["GET"]),
        Route("/oauth/authorize", oidc.authorize, methods=["GET"]),
        Route("/register", register.page, methods=["GET"]),
        Route("/register/submit", register.submit, methods=["POST"]),
        Route("/register/captcha/new", register.new_captcha, methods=["POST"]),
        Route("/register/captcha.png", register.captcha_picture, methods=["GET"]),
        Route("/register/captcha.wav", register.captcha_audio, methods=["GET"]),
        Route("/register/verify", register.verify, methods=["POST"]),
        Route("/register/resend", register.resend, methods=["POST"]),
        Route("/register/edit", register.edit, methods=["POST"]),
        Route("/register/status", register.status, methods=["GET"]),
        Route("/activate", register.activate_page, methods=["GET"]),
        Route("/activate", register.activate_submit, methods=["POST"]),
        Route("/help", help_routes.home, methods=["GET"]),
        Route("/help/search", help_routes.search, methods=["GET"]),
        Route("/help/guides/{slug:str}", help_routes.guide, methods=["GET"]),
        Route("/help/videos/{slug:str}", help_routes.video, methods=["GET"]),
        Route("/help/sign-in", help_routes.sign_in, methods=["GET"]),
        Mount("/help/static", app=StaticFiles(directory=str(HELP_STATIC)), name="help_static"),
        Route("/healthz", pages.healthz),
        Route("/readyz", pages.readyz),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(PublicDocuments, documents=_public_documents, hsts=settings.secure_cookies),
            Middleware(PortalMiddleware, hsts=settings.secure_cookies),
            Middleware(
                ApiRoutes,
                routes={
                    ("POST", "/oauth/token"): oidc.token,
                    ("POST", "/oauth/revoke"): oidc.revoke,
                    ("POST", "/oauth/introspect"): oidc.introspect,
                    ("GET", "/oauth/userinfo"): oidc.userinfo,
                    ("POST", "/oauth/userinfo"): oidc.userinfo,
                },
                on_error=_alacop_error,
            ),
        ],
        exception_handlers={
            AlacopError: _alacop_error,
            HTTPException: _http_error,
        },
        lifespan=lifespan,
    )
    return app


def _public_documents(scope: Scope) -> dict[str, PublicDocument]:
    """Discovery and the JWKS, answered before routing (once the app has started)."""
    portal: Portal | None = getattr(scope["app"].state, "portal", None)
    return portal.oidc.documents if portal is not None else {}


_PUBLIC: dict[str, tuple[str, str]] = {
    "csrf_failed": ("This page has expired", "Go back to the sign-in page and try again."),
    "rate_limited": (
        "Too many attempts",
        "There have been too many attempts from your network. Wait a minute, then try again.",
    ),
    "body_too_large": ("That request was too large", "Go back and try again."),
    "not_found": ("Page not found", "Check the address, or go to the sign-in page."),
    "flow_invalid": ("This took too long", "Start again from the sign-in page."),
    "flow_expired": ("This took too long", "Start again from the sign-in page."),
    "saml_refused": (
        "This application can't sign you in",
        "The sign-in request from the application could not be accepted: it may have expired, been used "
        "already, or come from an application that is not registered. Go back to the application and try "
        "again, or contact its support.",
    ),
    "authorization_refused": (
        "This application can't sign you in",
        "The application that sent you here, or the address it asked to return to, is not registered with the "
        "portal. Go back to the application, or contact its support.",
    ),
    "forbidden": (
        "You can't do that here",
        "The console is for agency coordinators and administrators, each within their own agencies.",
    ),
}


async def _alacop_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AlacopError)
    title, text = _PUBLIC.get(exc.code, ("We could not accept that request", "Go back and try again."))
    event_type = EventType.RATE_LIMITED if exc.code == "rate_limited" else EventType.REQUEST_REFUSED
    try:
        # A refusal the core already recorded (the console's ConsoleRefused) is not written twice.
        if not exc.audited:
            await http.portal(request).audit(
                AuditEvent(event_type, Outcome.FAILURE, exc.code, details={"path": request.url.path[:200]}),
                request,
            )
    except Exception:  # the refusal itself must still reach the user
        log.exception("could not audit a refused request")
    return await error_page(request, exc.status, exc.code, title, text)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return await error_page(
            request, 404, "not_found", "Page not found", "Check the address, or go to the sign-in page."
        )
    if exc.status_code == 405:
        return await error_page(
            request, 405, "method_not_allowed", "That action is not available here", "Go back and try again."
        )
    return await _alacop_error(request, AlacopError(str(exc.detail), code="bad_request"))
