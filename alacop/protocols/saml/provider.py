"""The identity provider: receive an AuthnRequest (or an IdP-initiated start), wait for the sign-in,
answer once with a signed Response to a consumer address from the application's metadata.

Until the application and its consumer address are known, a bad request is refused on the portal's own
page and never sent anywhere (no open redirect). Each path is audited: SamlRequestReceived,
SamlRequestRefused (with the reason) and SamlAssertionIssued, each naming the application.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from lxml import etree

from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.errors import AlacopError, Conflict, InvalidInput
from alacop.core.saml import (
    ISSUE_INSTANT_SKEW,
    PENDING_ID_FORMAT,
    PENDING_LIFETIME,
    SP_ID_FORMAT,
    UNSPECIFIED_NAMEID,
    PendingRequest,
    ServiceProvider,
    new_pending_id,
    validate_relay_state,
)
from alacop.core.session_manager import Current
from alacop.core.tokens import token_hash
from alacop.protocols.oidc._util import session_sid
from alacop.protocols.saml import binding, response
from alacop.protocols.saml.certs import CertRing
from alacop.protocols.saml.metadata import POST_BINDING, idp_metadata
from alacop.protocols.saml.xmlsafe import NS, SAMLP, MalformedXml, UnsafeXml, parse, text

CONTINUE_PATH = "/saml/continue"
SSO_PATH = "/saml/sso"
METADATA_PATH = "/saml/metadata"
_XS_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,255}$")
_INSTANT = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,9})?Z$")


class SamlRefused(AlacopError):
    """Shown on the portal, never sent to an application: the request could not be trusted or answered."""

    code = "saml_refused"
    status = 400


@dataclass(frozen=True, slots=True)
class SignIn:
    """To the sign-in page first, then back to `return_to`."""

    return_to: str
    sp_name: str


@dataclass(frozen=True, slots=True)
class _AuthnRequest:
    id: str
    issuer: str
    issue_instant: datetime
    destination: str | None
    acs_url: str | None
    acs_index: int | None
    protocol_binding: str | None
    force_authn: bool
    is_passive: bool
    nameid_format: str | None


def _flag(value: str | None) -> bool:
    return (value or "").strip() in ("true", "1")


def _instant(value: str) -> datetime | None:
    match = _INSTANT.fullmatch(value.strip())
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _read_request(root: etree._Element) -> _AuthnRequest:
    if root.tag != f"{SAMLP}AuthnRequest":
        raise _Refusal("not_authn_request")
    if root.get("Version") != "2.0":
        raise _Refusal("unsupported_version")
    request_id = root.get("ID") or ""
    if not _XS_ID.fullmatch(request_id):
        raise _Refusal("malformed_request")
    instant = _instant(root.get("IssueInstant") or "")
    if instant is None:
        raise _Refusal("malformed_request")
    issuers = root.findall("saml:Issuer", NS)
    if len(issuers) != 1 or not text(issuers[0]):
        raise _Refusal("issuer_missing")
    raw_index = root.get("AssertionConsumerServiceIndex")
    if raw_index is not None and (not raw_index.isdigit() or len(raw_index) > 5):
        raise _Refusal("malformed_request")
    policy = root.find("samlp:NameIDPolicy", NS)
    return _AuthnRequest(
        id=request_id,
        issuer=text(issuers[0])[:1024],
        issue_instant=instant,
        destination=root.get("Destination"),
        acs_url=root.get("AssertionConsumerServiceURL"),
        acs_index=int(raw_index) if raw_index is not None else None,
        protocol_binding=root.get("ProtocolBinding"),
        force_authn=_flag(root.get("ForceAuthn")),
        is_passive=_flag(root.get("IsPassive")),
        nameid_format=policy.get("Format") if policy is not None else None,
    )


class _Refusal(Exception):
    def __init__(self, reason: str, details: Mapping[str, object] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = dict(details or {})


def sp_event(
    kind: EventType,
    outcome: Outcome,
    reason: str,
    sp: ServiceProvider | None,
    current: Current | None,
    domain: str,
    details: Mapping[str, object] | None = None,
) -> AuditEvent:
    """An event that names the application (and the user, when there is one)."""
    user = current.user if current else None
    return AuditEvent(
        kind,
        outcome,
        reason,
        actor_id=user.id if user else None,
        subject_id=user.id if user else None,
        subject_name=f"{user.username}@{domain}" if user else None,
        agency_id=user.agency_id if user else None,
        details={
            "sp_id": sp.id if sp else None,
            "sp_name": sp.name if sp else None,
            "entity_id": sp.entity_id if sp else None,
            **(details or {}),
        },
    )


class SamlProvider:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        origin = deps.origin.rstrip("/")
        self.entity_id = origin + METADATA_PATH
        self.sso_url = origin + SSO_PATH
        self.certs = CertRing(deps)

    async def metadata(self) -> bytes:
        return idp_metadata(self.entity_id, self.sso_url, [c.cert_pem for c in await self.certs.published()])

    async def _refuse(
        self,
        reason: str,
        ctx: RequestContext,
        sp: ServiceProvider | None = None,
        who: Current | None = None,
        details: Mapping[str, object] | None = None,
    ) -> SamlRefused:
        async with self._deps.store.transaction() as tx:
            await tx.audit.append(
                sp_event(EventType.SAML_REQUEST_REFUSED, Outcome.FAILURE, reason, sp, who, self._deps.domain, details),
                ctx,
            )
        refused = SamlRefused(reason)
        refused.audited = True
        return refused

    def pending_lifetime(self) -> timedelta:
        # Long enough for a sign-in flow that expires and the fresh one that restarts on its way back.
        return max(PENDING_LIFETIME, 2 * self._deps.policy.flow_lifetime + timedelta(minutes=1))

    async def receive(
        self, raw_query: bytes, who: Current | None, ctx: RequestContext, browser_secret: str
    ) -> response.Answer | SignIn:
        """An AuthnRequest by HTTP-Redirect (SAML Bindings 3.4.4), in the browser holding `browser_secret`."""
        sp: ServiceProvider | None = None
        try:
            try:
                message = binding.read_redirect(raw_query)
            except binding.BindingError as exc:
                raise _Refusal(exc.reason) from exc
            try:
                request = _read_request(parse(message.xml))
            except UnsafeXml as exc:
                raise _Refusal("dtd_forbidden") from exc
            except MalformedXml as exc:
                raise _Refusal("malformed_xml") from exc
            async with self._deps.store.read() as tx:
                sp = await tx.saml_sps.by_entity_id(request.issuer)
            if sp is None:
                raise _Refusal("unknown_issuer", {"issuer": request.issuer[:200]})
            if not sp.active:
                raise _Refusal("sp_disabled")
            if sp.authn_requests_signed or message.signature is not None:
                # Checked against the certificates pinned from the metadata, over the bytes as received.
                failure = binding.verify(message, sp.certificates)
                if failure is not None:
                    raise _Refusal(failure)
            now = self._deps.clock.now()
            if abs(now - request.issue_instant) > ISSUE_INSTANT_SKEW:
                raise _Refusal("stale_request", {"issue_instant": request.issue_instant.isoformat()})
            if request.destination is not None and request.destination != self.sso_url:
                raise _Refusal("wrong_destination", {"destination": request.destination[:200]})
            if request.protocol_binding is not None and request.protocol_binding != POST_BINDING:
                raise _Refusal("unsupported_binding", {"binding": request.protocol_binding[:200]})
            if request.acs_url is not None:
                consumer = sp.acs_by_url(request.acs_url)
                if consumer is None:
                    raise _Refusal("acs_unregistered", {"acs_url": request.acs_url[:200]})
            elif request.acs_index is not None:
                consumer = sp.acs_by_index(request.acs_index)
                if consumer is None:
                    raise _Refusal("acs_unregistered", {"acs_index": request.acs_index})
            else:
                consumer = sp.default_acs
            try:
                relay_state = validate_relay_state(message.relay_state)
            except InvalidInput as exc:
                raise _Refusal("invalid_relay_state") from exc
        except _Refusal as refusal:
            raise await self._refuse(refusal.reason, ctx, sp, who, refusal.details) from None
        assert sp is not None
        browser = token_hash(browser_secret)
        pending = PendingRequest(
            id=new_pending_id(),
            sp_id=sp.id,
            request_id=request.id,
            acs_url=consumer.url,
            binding=browser,
            relay_state=relay_state,
            force_authn=request.force_authn,
            is_passive=request.is_passive,
            received_at=now,
            expires_at=now + self.pending_lifetime(),
        )
        received = sp_event(
            EventType.SAML_REQUEST_RECEIVED,
            Outcome.INFO,
            "sp_initiated",
            sp,
            who,
            self._deps.domain,
            {
                "request_id": request.id,
                "acs_url": consumer.url,
                "force_authn": request.force_authn,
                "is_passive": request.is_passive,
                "signed": message.signature is not None,
            },
        )
        try:
            async with self._deps.store.transaction() as tx:
                earlier = await tx.saml_requests.by_request_id(sp.id, request.id)
                if earlier is None:
                    await tx.saml_requests.add(pending)
                    await tx.audit.append(received, ctx)
        except Conflict:
            # The same request arrived twice at once (a double click, two instances): the other one
            # stored it. Read it in a fresh transaction; PostgreSQL has aborted this one.
            async with self._deps.store.read() as tx:
                earlier = await tx.saml_requests.by_request_id(sp.id, request.id)
            if earlier is None:
                raise
        if earlier is not None:
            same_browser = hmac.compare_digest(earlier.binding, browser)
            if earlier.answered_at is not None or earlier.expires_at <= now or not same_browser:
                # Answered already (its InResponseTo was used), or another browser's: one request, one answer.
                raise await self._refuse("request_replayed", ctx, sp, who, {"request_id": request.id})
            # The same browser sending the same request again (a reload during the sign-in): carry on.
            pending = earlier
        if request.nameid_format not in (None, UNSPECIFIED_NAMEID, str(sp.nameid_format)):
            return await self._fail(sp, pending, who, ctx, response.INVALID_NAMEID_POLICY, "nameid_policy_unsupported")
        return await self._answer(sp, pending, who, ctx)

    async def refuse_binding(self, ctx: RequestContext) -> SamlRefused:
        """A request by a binding the portal does not accept (HTTP-POST requests, for now)."""
        return await self._refuse("unsupported_binding", ctx)

    async def resume(
        self, pending_id: str, who: Current | None, ctx: RequestContext, browser_secret: str
    ) -> response.Answer | SignIn:
        """Back from the sign-in: answer the request waiting under this id, in the browser it arrived in."""
        if not PENDING_ID_FORMAT.fullmatch(pending_id):
            raise await self._refuse("request_unknown", ctx, None, who)
        now = self._deps.clock.now()
        async with self._deps.store.read() as tx:
            pending = await tx.saml_requests.get(pending_id)
            sp = await tx.saml_sps.get(pending.sp_id) if pending else None
        if pending is not None and not hmac.compare_digest(pending.binding, token_hash(browser_secret)):
            # Another browser's request: as if there were none (the link alone is not enough).
            raise await self._refuse("request_unknown", ctx, None, who)
        if pending is None or sp is None or pending.expires_at <= now:
            raise await self._refuse("request_expired", ctx, sp, who)
        if pending.answered_at is not None:
            raise await self._refuse("request_already_answered", ctx, sp, who, {"request_id": pending.request_id})
        if not sp.active:
            raise await self._refuse("sp_disabled", ctx, sp, who)
        return await self._answer(sp, pending, who, ctx)

    async def start(
        self, sp_id: str, who: Current | None, ctx: RequestContext, browser_secret: str
    ) -> response.Answer | SignIn:
        """IdP-initiated sign-in (Profiles 4.1.5), from My applications, for applications that allow it."""
        sp = None
        if SP_ID_FORMAT.fullmatch(sp_id):
            async with self._deps.store.read() as tx:
                sp = await tx.saml_sps.get(sp_id)
        if sp is None or not sp.active:
            raise await self._refuse("sp_unknown", ctx, sp, who)
        if not sp.idp_initiated:
            raise await self._refuse("idp_initiated_not_allowed", ctx, sp, who)
        now = self._deps.clock.now()
        consumer = sp.default_acs
        pending = PendingRequest(
            id=new_pending_id(),
            sp_id=sp.id,
            acs_url=consumer.url,
            binding=token_hash(browser_secret),
            relay_state=sp.default_relay_state,
            received_at=now,
            expires_at=now + self.pending_lifetime(),
        )
        async with self._deps.store.transaction() as tx:
            await tx.saml_requests.add(pending)
            await tx.audit.append(
                sp_event(
                    EventType.SAML_REQUEST_RECEIVED,
                    Outcome.INFO,
                    "idp_initiated",
                    sp,
                    who,
                    self._deps.domain,
                    {"acs_url": consumer.url},
                ),
                ctx,
            )
        return await self._answer(sp, pending, who, ctx)

    async def application_name(self, pending_id: str) -> str | None:
        """The name of the application a pending request is for, for "to continue to …"."""
        if not PENDING_ID_FORMAT.fullmatch(pending_id):
            return None
        async with self._deps.store.read() as tx:
            pending = await tx.saml_requests.get(pending_id)
            sp = await tx.saml_sps.get(pending.sp_id) if pending else None
        return sp.name if sp is not None and sp.active else None

    async def _answer(
        self, sp: ServiceProvider, pending: PendingRequest, who: Current | None, ctx: RequestContext
    ) -> response.Answer | SignIn:
        # ForceAuthn asks for a sign-in after the request arrived, not a session from before it.
        stale = who is not None and pending.force_authn and who.session.auth_time < pending.received_at
        weak = who is not None and sp.require_aal2 and who.session.aal != "aal2"
        if who is None or stale or weak:
            if pending.is_passive:
                return await self._fail(sp, pending, who, ctx, response.NO_PASSIVE, "no_passive")
            return SignIn(return_to=f"{CONTINUE_PATH}?request={pending.id}", sp_name=sp.name)
        if not who.user.active:
            return await self._fail(sp, pending, who, ctx, response.REQUEST_DENIED, "account_inactive")
        if not sp.allows_agency(who.user.agency_id):
            return await self._fail(sp, pending, who, ctx, response.REQUEST_DENIED, "agency_not_allowed")
        now = self._deps.clock.now()
        async with self._deps.store.read() as tx:
            agency = await tx.agencies.get(who.user.agency_id)
        answer = response.success(
            issuer=self.entity_id,
            signer=await self.certs.signer(),
            sp=sp,
            acs_url=pending.acs_url,
            in_response_to=pending.request_id,
            relay_state=pending.relay_state,
            user=who.user,
            agency=agency,
            session=who.session,
            session_index=session_sid(self._deps.pepper, who.session.id_hash),
            domain=self._deps.domain,
            now=now,
        )
        issued = sp_event(
            EventType.SAML_ASSERTION_ISSUED,
            Outcome.SUCCESS,
            "assertion_issued",
            sp,
            who,
            self._deps.domain,
            {
                "request_id": pending.request_id,
                "response_id": answer.response_id,
                "assertion_id": answer.assertion_id,
                "acs_url": pending.acs_url,
                "nameid_format": str(sp.nameid_format),
                "attributes": list(sp.attributes),
                "aal": who.session.aal,
            },
        )
        await self._answer_once(sp, pending, who, ctx, now, issued)
        return replace(answer, sp_name=sp.name)

    async def _fail(
        self,
        sp: ServiceProvider,
        pending: PendingRequest,
        who: Current | None,
        ctx: RequestContext,
        status: str,
        reason: str,
    ) -> response.Answer:
        """A signed error Response to the (registered) consumer, as the profile asks, audited as a refusal."""
        now = self._deps.clock.now()
        answer = response.failure(
            issuer=self.entity_id,
            signer=await self.certs.signer(),
            acs_url=pending.acs_url,
            in_response_to=pending.request_id,
            relay_state=pending.relay_state,
            second=status,
            now=now,
        )
        refused = sp_event(
            EventType.SAML_REQUEST_REFUSED,
            Outcome.FAILURE,
            reason,
            sp,
            who,
            self._deps.domain,
            {"request_id": pending.request_id, "status": status, "response_id": answer.response_id},
        )
        await self._answer_once(sp, pending, who, ctx, now, refused)
        return replace(answer, sp_name=sp.name)

    async def _answer_once(
        self,
        sp: ServiceProvider,
        pending: PendingRequest,
        who: Current | None,
        ctx: RequestContext,
        now: datetime,
        event: AuditEvent,
    ) -> None:
        """Mark the request answered and record how, in one transaction; a second answer is refused."""
        async with self._deps.store.transaction() as tx:
            first = await tx.saml_requests.answer(pending.id, now)
            if first:
                await tx.audit.append(event, ctx)
        if not first:
            raise await self._refuse("request_already_answered", ctx, sp, who, {"request_id": pending.request_id})
