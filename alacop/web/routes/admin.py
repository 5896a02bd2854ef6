"""The coordinators' and administrators' console at /admin: thin routes over core/console.Console.

Every page needs an AAL2 session and the coordinator or admin role; every rule about who may see or
change what lives in the core, which audits each refusal. Here: read the request, call the core, and
turn its answers into pages, redirects and downloads. `StepUpRequired` becomes a redirect to
/account/reauth (CJIS IA-11); bad input shows the page again with a message and a 4xx status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from urllib.parse import quote

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from alacop.core.accounts import Role, UserStatus
from alacop.core.applications import Applications, NewApplication
from alacop.core.audit import AuditChain, EventType, Outcome
from alacop.core.authz import Actor, actor_for
from alacop.core.console import MAX_ROWS, AuditFilter, Console
from alacop.core.errors import AlacopError, Conflict, CsrfFailed, InvalidInput, NotFound, StepUpRequired
from alacop.core.oidc import KNOWN_SCOPES
from alacop.core.saml import ATTRIBUTES, NAMEID_CHOICES
from alacop.core.session_manager import Current
from alacop.flows.base import Message
from alacop.protocols.saml.metadata import MAX_METADATA
from alacop.protocols.saml.registry import NewServiceProvider, ServiceProviders
from alacop.web import http
from alacop.web.render import template
from alacop.web.routes._common import rate_limit
from alacop.web.routes.account import current, to_reauth

Page = Callable[[Request, "Seat", tuple[Message, ...], int], Awaitable[Response]]
Act = Callable[["Seat", dict[str, str]], Awaitable[str]]
Endpoint = Callable[[Request], Awaitable[Response]]

_DONE = {
    "reauthenticated": "Thank you. You can make changes for the next few minutes.",
    "unlocked": "The account was unlocked.",
    "not_locked": "The account was not locked; its failure counters were cleared.",
    "disabled": "The account was disabled and its sessions ended.",
    "enabled": "The account was enabled.",
    "methods_reset": "The sign-in methods were removed. The user sets up new ones at their next sign-in.",
    "link_sent": "A new activation link was sent; the earlier one no longer works.",
    "training_updated": "The training date was updated.",
    "sessions_ended": "Every session of the account was ended.",
    "role_changed": "The role was changed and the account's sessions ended.",
    "approved": "The request was approved and the activation link sent.",
    "denied": "The request was denied and the applicant told why.",
    "agency_created": "The agency was created.",
    "agency_updated": "The agency was saved.",
    "coordinators_changed": "The coordinators were saved.",
    "application_disabled": "The application was disabled: it can no longer sign anyone in.",
    "saml_application_added": "The SAML application was registered.",
    "saml_application_disabled": "The SAML application was disabled: it can no longer sign anyone in.",
}


class Seat:
    """Who is at the console for this request: the signed-in user, their Actor, and the service."""

    def __init__(self, request: Request, who: Current, actor: Actor, console: Console) -> None:
        self.request = request
        self.who = who
        self.actor = actor
        self.console = console
        self.ctx = http.context(request)

    @property
    def now(self) -> datetime:
        return http.portal(self.request).deps.clock.now()

    def page(
        self, name: str, section: str, values: dict[str, object], messages: tuple[Message, ...], status: int
    ) -> Response:
        secret, _ = http.ensure_browser_secret(self.request)
        done = self.request.query_params.get("done", "")
        if not messages and done in _DONE:
            messages = (Message(done, _DONE[done], "success"),)
        ctx = {
            "user": self.who.user,
            "actor": self.actor,
            "section": section,
            "csrf_token": http.form_token(self.request, secret),
            "messages": messages,
            "message_ids": [m.id for m in messages],
            **values,
        }
        return template(self.request, f"admin/{name}.html", ctx, status)


def _console(request: Request) -> Console:
    p = http.portal(request)
    return Console(p.deps, p.directory, p.approvals, AuditChain(p.settings.audit_key))


async def _seat(request: Request, action: str) -> Seat | Response:
    """The console user, or the response that sends them away: /login, or a 403 (audited by the core)."""
    who = await current(request)
    if who is None:
        return RedirectResponse("/login", status_code=303)
    p = http.portal(request)
    console = _console(request)
    actor = await actor_for(p.deps, who.user, who.session)
    await console.enter(actor, http.context(request), action)
    return Seat(request, who, actor, console)


def view(action: str, render: Page) -> Endpoint:
    """A console page (GET)."""

    async def endpoint(request: Request) -> Response:
        seat = await _seat(request, action)
        if isinstance(seat, Response):
            return seat
        return await render(request, seat, (), 200)

    return endpoint


def change(action: str, back: Page, back_path: Callable[[Request], str], act: Act) -> Endpoint:
    """A console change (POST): rate limit, CSRF, session and role first; then the core decides.

    `act` returns the `done` code and the browser goes back to `back_path` (redirect after POST). A
    change outside the step-up window goes to /account/reauth and returns to `back_path`; bad input
    shows the `back` page again with the reason and a 4xx status.
    """

    async def endpoint(request: Request) -> Response:
        await rate_limit(request, "console")
        form = await http.read_form(request)
        if not http.check_form_token(request, http.field(form, "csrf_token")):
            raise CsrfFailed(f"console {action} without a valid token")
        values = {k: http.field(form, k, max_length=2048) for k in form}
        seat = await _seat(request, action)
        if isinstance(seat, Response):
            return seat
        path = quote(back_path(request), safe="/-")
        try:
            done = await act(seat, values)
        except StepUpRequired:
            return to_reauth(path)
        except (InvalidInput, Conflict) as exc:
            return await back(request, seat, (Message(exc.code, _refusal_text(exc)),), exc.status)
        return RedirectResponse(f"{path}?done={done}", status_code=303)

    return endpoint


def _refusal_text(exc: AlacopError) -> str:
    text = exc.detail or "That was not accepted."
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _param(request: Request, name: str) -> str:
    return str(request.path_params.get(name, ""))


# -- home ---------------------------------------------------------------------------------------------
async def home(request: Request) -> Response:
    seat = await _seat(request, "console")
    if isinstance(seat, Response):
        return seat
    return RedirectResponse("/admin/users", status_code=303)


# -- users --------------------------------------------------------------------------------------------
async def _users_page(request: Request, seat: Seat, messages: tuple[Message, ...], status: int) -> Response:
    q = request.query_params
    wanted = {k: q.get(k, "")[:200] for k in ("q", "agency", "status", "role")}
    try:
        found = await seat.console.search_users(
            seat.actor,
            seat.ctx,
            text=wanted["q"],
            agency_id=wanted["agency"],
            status=wanted["status"],
            role=wanted["role"],
        )
    except (InvalidInput, NotFound) as exc:
        found, messages, status = [], (Message(exc.code, _refusal_text(exc)),), 400
    return seat.page(
        "users",
        "users",
        {
            "found": found,
            "wanted": wanted,
            "agencies": await seat.console.agencies_in_scope(seat.actor),
            "statuses": [str(s) for s in UserStatus],
            "roles": [str(r) for r in Role],
            "max_rows": MAX_ROWS,
        },
        messages,
        status,
    )


async def _user_page(request: Request, seat: Seat, messages: tuple[Message, ...], status: int) -> Response:
    shown = await seat.console.user(seat.actor, _param(request, "user_id"), seat.ctx)
    # Hiding forms is a courtesy; the core refuses the same actions whatever is posted.
    editable = shown.user.id != seat.actor.id and (seat.actor.is_admin or shown.user.role is Role.USER)
    return seat.page(
        "user",
        "users",
        {"shown": shown, "editable": editable, "roles": [str(r) for r in Role], "today": seat.now.date()},
        messages,
        status,
    )


users = view("search_users", _users_page)
user = view("view_user", _user_page)


def _user_path(request: Request) -> str:
    return f"/admin/users/{_param(request, 'user_id')}"


def _user_id(seat: Seat) -> str:
    return _param(seat.request, "user_id")


async def _unlock(seat: Seat, values: dict[str, str]) -> str:
    return "unlocked" if await seat.console.unlock(seat.actor, _user_id(seat), seat.ctx) else "not_locked"


async def _disable(seat: Seat, values: dict[str, str]) -> str:
    await seat.console.set_status(seat.actor, _user_id(seat), UserStatus.DISABLED, seat.ctx)
    return "disabled"


async def _enable(seat: Seat, values: dict[str, str]) -> str:
    await seat.console.set_status(seat.actor, _user_id(seat), UserStatus.ACTIVE, seat.ctx)
    return "enabled"


async def _reset_methods(seat: Seat, values: dict[str, str]) -> str:
    await seat.console.reset_methods(seat.actor, _user_id(seat), values.get("note", ""), seat.ctx)
    return "methods_reset"


async def _activation_link(seat: Seat, values: dict[str, str]) -> str:
    await seat.console.issue_link(seat.actor, _user_id(seat), seat.ctx)
    return "link_sent"


async def _training(seat: Seat, values: dict[str, str]) -> str:
    await seat.console.set_training(seat.actor, _user_id(seat), values.get("training_date", ""), seat.ctx)
    return "training_updated"


async def _end_sessions(seat: Seat, values: dict[str, str]) -> str:
    await seat.console.end_sessions(seat.actor, _user_id(seat), seat.ctx)
    return "sessions_ended"


async def _role(seat: Seat, values: dict[str, str]) -> str:
    await seat.console.set_role(seat.actor, _user_id(seat), values.get("role", ""), seat.ctx)
    return "role_changed"


unlock = change("unlock", _user_page, _user_path, _unlock)
disable = change("disable", _user_page, _user_path, _disable)
enable = change("enable", _user_page, _user_path, _enable)
reset_methods = change("reset_methods", _user_page, _user_path, _reset_methods)
activation_link = change("activation_link", _user_page, _user_path, _activation_link)
training = change("training", _user_page, _user_path, _training)
end_sessions = change("end_sessions", _user_page, _user_path, _end_sessions)
role = change("set_role", _user_page, _user_path, _role)


# -- registration requests ----------------------------------------------------------------------------
async def _requests_page(request: Request, seat: Seat, messages: tuple[Message, ...], status: int) -> Response:
    queue = await seat.console.requests(seat.actor, seat.ctx)
    return seat.page("requests", "requests", {"queue": queue}, messages, status)


async def _request_page(request: Request, seat: Seat, messages: tuple[Message, ...], status: int) -> Response:
    registration, agency = await seat.console.request(seat.actor, _param(request, "registration_id"), seat.ctx)
    return seat.page(
        "request",
        "requests",
        {
            "registration": registration,
            "application": registration.application,
            "agency": agency,
            "pending": str(registration.status) == "pending" and seat.now < registration.expires_at,
        },
        messages,
        status,
    )


requests = view("view_requests", _requests_page)
request_page = view("view_request", _request_page)


def _request_path(request: Request) -> str:
    return f"/admin/requests/{_param(request, 'registration_id')}"


async def _approve(seat: Seat, values: dict[str, str]) -> str:
    await seat.console.approve(seat.actor, _param(seat.request, "registration_id"), seat.ctx)
    return "approved"


async def _deny(seat: Seat, values: dict[str, str]) -> str:
    await seat.console.deny(seat.actor, _param(seat.request, "registration_id"), values.get("reason", ""), seat.ctx)
    return "denied"


approve = change("approve", _request_page, _request_path, _approve)
deny = change("deny", _request_page, _request_path, _deny)


# -- agencies and policy (administrators) -------------------------------------------------------------
async def _agencies_page(request: Request, seat: Seat, messages: tuple[Message, ...], status: int) -> Response:
    listed = await seat.console.agencies(seat.actor, seat.ctx)
    return seat.page("agencies", "agencies", {"listed": listed}, messages, status)


async def _agency_page(request: Request, seat: Seat, messages: tuple[Message, ...], status: int) -> Response:
    shown = await seat.console.agency(seat.actor, _param(request, "agency_id"), seat.ctx)
    return seat.page("agency", "agencies", {"shown": shown}, messages, status)


async def _policy_page(request: Request, seat: Seat, messages: tuple[Message, ...], status: int) -> Response:
    await seat.console.require_admin(seat.actor, seat.ctx, "view_policy")
    rows = http.portal(request).settings.policy.describe()
    return seat.page("policy", "policy", {"rows": rows}, messages, status)


agencies = view("view_agencies", _agencies_page)
agency = view("view_agency", _agency_page)
policy = view("view_policy", _policy_page)


def _agency_path(request: Request) -> str:
    return f"/admin/agencies/{_param(request, 'agency_id')}"


async def _create_agency(seat: Seat, values: dict[str, str]) -> str:
    await seat.console.create_agency(
        seat.actor, values.get("ori", ""), values.get("name", ""), values.get("email_domains", ""), seat.ctx
    )
    return "agency_created"


async def _update_agency(seat: Seat, values: dict[str, str]) -> str:
    await seat.console.update_agency(
        seat.actor,
        _param(seat.request, "agency_id"),
        values.get("ori", ""),
        values.get("name", ""),
        values.get("email_domains", ""),
        seat.ctx,
    )
    return "agency_updated"


async def _coordinators(seat: Seat, values: dict[str, str]) -> str:
    await seat.console.set_coordinators(
        seat.actor, _param(seat.request, "agency_id"), values.get("coordinators", ""), seat.ctx
    )
    return "coordinators_changed"


create_agency = change("create_agency", _agencies_page, lambda request: "/admin/agencies", _create_agency)
update_agency = change("update_agency", _agency_page, _agency_path, _update_agency)
coordinators = change("set_coordinators", _agency_page, _agency_path, _coordinators)


# -- the audit trail ----------------------------------------------------------------------------------
_AUDIT_FIELDS = ("user", "agency", "type", "outcome", "since", "until")


async def _audit_page(request: Request, seat: Seat, messages: tuple[Message, ...], status: int) -> Response:
    wanted = {k: request.query_params.get(k, "")[:200] for k in _AUDIT_FIELDS}
    page = None
    try:
        page = await seat.console.search_audit(seat.actor, AuditFilter.parse(wanted), seat.ctx)
    except (InvalidInput, NotFound) as exc:
        messages, status = (Message(exc.code, _refusal_text(exc)),), 400
    return seat.page(
        "audit",
        "audit",
        {
            "wanted": wanted,
            "page": page,
            "agencies": await seat.console.agencies_in_scope(seat.actor),
            "types": sorted(str(t) for t in EventType),
            "outcomes": [str(o) for o in Outcome],
            "last_check": await seat.console.last_verification(),
            "max_rows": MAX_ROWS,
        },
        messages,
        status,
    )


async def _verify_page(request: Request, seat: Seat, messages: tuple[Message, ...], status: int) -> Response:
    await rate_limit(request, "console")
    result = await seat.console.verify(seat.actor, seat.ctx)
    return seat.page("verify", "audit", {"result": result}, messages, status)


audit = view("search_audit", _audit_page)
verify = view("verify_audit", _verify_page)


async def export(request: Request) -> Response:
    """The search's records as a download (POST, so a link elsewhere cannot start one)."""
    await rate_limit(request, "console")
    form = await http.read_form(request)
    if not http.check_form_token(request, http.field(form, "csrf_token")):
        raise CsrfFailed("audit export without a valid token")
    seat = await _seat(request, "export_audit")
    if isinstance(seat, Response):
        return seat
    values = {k: http.field(form, k, max_length=200) for k in (*_AUDIT_FIELDS, "format")}
    fmt = values["format"]
    body = await seat.console.export_audit(seat.actor, AuditFilter.parse(values), fmt, seat.ctx)
    stamp = seat.now.strftime("%Y%m%dT%H%M%SZ")
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="alacop-audit-{stamp}.{fmt}"'},
    )


# -- authorized applications (administrators) ---------------------------------------------------------
def _lines(value: str) -> list[str]:
    return [part.strip() for part in value.replace(",", "\n").splitlines() if part.strip()]


async def _applications_page(
    request: Request,
    seat: Seat,
    messages: tuple[Message, ...],
    status: int,
    shown_secret: tuple[str, str] | None = None,
) -> Response:
    await seat.console.require_admin(seat.actor, seat.ctx, "view_applications")
    listed = await Applications(http.portal(request).deps).registered(seat.actor)
    response = seat.page(
        "applications",
        "applications",
        {"listed": listed, "known_scopes": KNOWN_SCOPES, "shown_secret": shown_secret},
        messages,
        status,
    )
    if shown_secret:
        # The secret is in this page only: never cached, never repeated.
        response.headers["cache-control"] = "no-store"
    return response


applications = view("view_applications", _applications_page)


async def _admin_form(request: Request, action: str, *, max_files: int = 0) -> tuple[Seat, FormData] | Response:
    """An administrators-only change: rate limit, CSRF, session and role, then the form for the route to read."""
    await rate_limit(request, "console")
    form = await http.read_form(request, max_fields=60, max_files=max_files)
    if not http.check_form_token(request, http.field(form, "csrf_token")):
        raise CsrfFailed(f"console {action} without a valid token")
    seat = await _seat(request, action)
    if isinstance(seat, Response):
        return seat
    await seat.console.require_admin(seat.actor, seat.ctx, action)
    return seat, form


async def _application_change(request: Request, action: str) -> tuple[Seat, dict[str, str]] | Response:
    got = await _admin_form(request, action)
    if isinstance(got, Response):
        return got
    seat, form = got
    values: dict[str, str] = {}
    for key in form:
        values[key] = http.field(form, key, max_length=4096)
    values["scope"] = " ".join(str(v) for v in form.getlist("scope") if isinstance(v, str))
    return seat, values


async def create_application(request: Request) -> Response:
    got = await _application_change(request, "create_application")
    if isinstance(got, Response):
        return got
    seat, v = got
    new = NewApplication(
        name=v.get("name", ""),
        redirect_uris=_lines(v.get("redirect_uris", "")),
        post_logout_redirect_uris=_lines(v.get("post_logout_redirect_uris", "")),
        public=v.get("client_type") == "public",
        scopes=v["scope"].split() or None,
        initiate_login_uri=v.get("initiate_login_uri") or None,
        logo_url=v.get("logo_url") or None,
        backchannel_logout_uri=v.get("backchannel_logout_uri") or None,
        access_token_format=v.get("access_token_format", "jwt"),
        agency_oris=_lines(v.get("agencies", "")) or None,
    )
    try:
        client, secret = await Applications(http.portal(request).deps).create(seat.actor, new, seat.ctx)
    except StepUpRequired:
        return to_reauth("/admin/applications")
    except (InvalidInput, Conflict, NotFound) as exc:
        return await _applications_page(request, seat, (Message(exc.code, _refusal_text(exc)),), exc.status)
    done = Message("application_created", f"{client.name} was registered.", "success")
    return await _applications_page(request, seat, (done,), 200, (client.client_id, secret or ""))


async def disable_application(request: Request) -> Response:
    got = await _application_change(request, "disable_application")
    if isinstance(got, Response):
        return got
    seat, _ = got
    try:
        await Applications(http.portal(request).deps).disable(seat.actor, _param(request, "client_id"), seat.ctx)
    except StepUpRequired:
        return to_reauth("/admin/applications")
    except (InvalidInput, Conflict, NotFound) as exc:
        return await _applications_page(request, seat, (Message(exc.code, _refusal_text(exc)),), exc.status)
    return RedirectResponse("/admin/applications?done=application_disabled", status_code=303)


async def rotate_application_secret(request: Request) -> Response:
    got = await _application_change(request, "rotate_application_secret")
    if isinstance(got, Response):
        return got
    seat, _ = got
    try:
        client, secret = await Applications(http.portal(request).deps).rotate_secret(
            seat.actor, _param(request, "client_id"), seat.ctx
        )
    except StepUpRequired:
        return to_reauth("/admin/applications")
    except (InvalidInput, Conflict, NotFound) as exc:
        return await _applications_page(request, seat, (Message(exc.code, _refusal_text(exc)),), exc.status)
    done = Message("secret_rotated", f"A new secret for {client.name}; the old one no longer works.", "success")
    return await _applications_page(request, seat, (done,), 200, (client.client_id, secret))


# -- SAML applications (administrators) ---------------------------------------------------------------
SAML_PATH = "/admin/applications/saml"
# Refusals about the metadata itself mark the metadata field, so the admin knows where to look.
_METADATA_CODES = ("invalid_metadata", "metadata_required", "sp_exists")
_NAMEID_LABELS = {str(uri): label for label, uri in NAMEID_CHOICES.items()}


def _saml_defaults() -> dict[str, object]:
    # Every attribute ticked, as the command line releases all of them unless told otherwise.
    return {
        "name": "",
        "metadata": "",
        "nameid": "persistent",
        "attributes": list(ATTRIBUTES),
        "idp_initiated": False,
        "relay_state": "",
        "start_url": "",
        "logo_url": "",
        "agencies": "",
    }


async def _saml_page(
    request: Request,
    seat: Seat,
    messages: tuple[Message, ...],
    status: int,
    typed: dict[str, object] | None = None,
) -> Response:
    await seat.console.require_admin(seat.actor, seat.ctx, "view_saml_applications")
    p = http.portal(request)
    listed = await ServiceProviders(p.deps).registered(seat.actor)
    oris = {agency.id: agency.ori for agency in await seat.console.agencies_in_scope(seat.actor)}
    return seat.page(
        "saml_applications",
        "applications",
        {
            "listed": listed,
            "oris": oris,
            "attributes": ATTRIBUTES,
            "nameid_labels": _NAMEID_LABELS,
            "typed": typed or _saml_defaults(),
            "metadata_invalid": any(m.id in _METADATA_CODES for m in messages),
            "idp_metadata_url": p.saml.entity_id,
        },
        messages,
        status,
    )


saml_applications = view("view_saml_applications", _saml_page)


async def _uploaded_metadata(form: FormData) -> bytes:
    upload = form.get("metadata_file")
    if not isinstance(upload, UploadFile):
        return b""
    try:
        # One byte over the cap is enough for the parser to refuse it as too large.
        return await upload.read(MAX_METADATA + 1)
    finally:
        await upload.close()


async def create_saml_application(request: Request) -> Response:
    got = await _admin_form(request, "create_saml_application", max_files=1)
    if isinstance(got, Response):
        return got
    seat, form = got
    limit = http.portal(request).settings.max_body_bytes
    text = {
        key: http.field(form, key, max_length=4096)
        for key in ("name", "nameid", "relay_state", "start_url", "logo_url", "agencies")
    }
    text["metadata"] = http.field(form, "metadata", max_length=limit)
    uploaded = await _uploaded_metadata(form)
    if uploaded:
        # A chosen file wins over the text box. It cannot be put back in its field, so the text box shows
        # what was read, which any refusal is about, to correct or resubmit.
        text["metadata"] = uploaded[:limit].decode("utf-8", errors="replace")
    metadata = uploaded or text["metadata"].encode()
    attributes = [str(v) for v in form.getlist("attribute") if isinstance(v, str)]
    idp_initiated = http.field(form, "idp_initiated") == "yes"
    typed: dict[str, object] = {**text, "attributes": attributes, "idp_initiated": idp_initiated}
    try:
        if not metadata.strip():
            raise InvalidInput("paste the application's SAML metadata, or choose its file", code="metadata_required")
        if not attributes:
            # Releasing nothing but the NameID is rare enough to be a slip here; the command line can do it.
            raise InvalidInput("choose at least one attribute to release", code="attribute_required")
        await ServiceProviders(http.portal(request).deps).add(
            seat.actor,
            NewServiceProvider(
                name=text["name"],
                metadata=metadata,
                attributes=attributes,
                nameid=text["nameid"],
                idp_initiated=idp_initiated,
                relay_state=text["relay_state"] or None,
                start_url=text["start_url"] or None,
                logo_url=text["logo_url"] or None,
                agency_oris=_lines(text["agencies"]) or None,
            ),
            seat.ctx,
        )
    except StepUpRequired:
        return to_reauth(SAML_PATH)
    except (InvalidInput, Conflict, NotFound) as exc:
        return await _saml_page(request, seat, (Message(exc.code, _refusal_text(exc)),), exc.status, typed)
    return RedirectResponse(f"{SAML_PATH}?done=saml_application_added", status_code=303)


async def disable_saml_application(request: Request) -> Response:
    got = await _admin_form(request, "disable_saml_application")
    if isinstance(got, Response):
        return got
    seat, _ = got
    try:
        await ServiceProviders(http.portal(request).deps).disable(seat.actor, _param(request, "sp_id"), seat.ctx)
    except StepUpRequired:
        return to_reauth(SAML_PATH)
    except (InvalidInput, Conflict, NotFound) as exc:
        return await _saml_page(request, seat, (Message(exc.code, _refusal_text(exc)),), exc.status)
    return RedirectResponse(f"{SAML_PATH}?done=saml_application_disabled", status_code=303)
