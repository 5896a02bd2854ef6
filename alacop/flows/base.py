"""What every self-service flow shares: identity, expiry, CSRF, browser binding and messages."""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.errors import CsrfFailed, FlowExpired, FlowInvalid
from alacop.core.ports import FlowRecord
from alacop.core.tokens import new_token, same, token_hash


class FlowKind(StrEnum):
    LOGIN = "login"


@dataclass(frozen=True, slots=True)
class Message:
    """A UI message with a stable id, which suits translation and tests."""

    id: str
    text: str
    level: str = "error"

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "text": self.text, "level": self.level}


_FLOW_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def browser_binding(browser_secret: str) -> str:
    return token_hash(browser_secret)


def new_flow_id() -> str:
    # 128 bits: the id is a bearer of the flow, though the browser binding is checked too.
    return new_token(16)


def new_csrf() -> str:
    return new_token(32)


def check_flow(record: FlowRecord | None, *, binding: str, now: datetime, kind: str) -> FlowRecord:
    """A flow is usable only by the browser that started it, before it expires, for its kind."""
    if record is None or record.kind != kind:
        raise FlowInvalid("unknown flow")
    if not same(record.binding, binding):
        raise FlowInvalid("flow belongs to another browser")
    if now >= record.expires_at:
        raise FlowExpired("flow expired")
    return record


def check_csrf(record: FlowRecord, submitted: str) -> None:
    if not submitted or not same(record.csrf_token, submitted):
        raise CsrfFailed("csrf token does not match the flow")


async def load_record(deps: Deps, flow_id: str, browser_secret: str, kind: str) -> FlowRecord:
    """A stored flow, if this browser may use it now (see check_flow)."""
    if not _FLOW_ID.fullmatch(flow_id):
        # Never a query with a NUL or other junk in it: PostgreSQL refuses such text with an error.
        raise FlowInvalid("malformed flow id")
    async with deps.store.read() as db:
        record = await db.flows.get(flow_id)
    return check_flow(record, binding=browser_binding(browser_secret), now=deps.clock.now(), kind=kind)


async def discard_expired(
    deps: Deps, flow_id: str, kind: str, ctx: RequestContext, browser_secret: str | None = None
) -> str | None:
    """Drop an expired flow and record it; the caller then starts a fresh one ("This took too long").

    Returns the expired flow's way back (`return_to`) when it was this browser's own, so the fresh
    flow can still return to the application that asked for the sign-in.
    """
    if not _FLOW_ID.fullmatch(flow_id):
        return None
    async with deps.store.transaction() as tx:
        record = await tx.flows.get(flow_id)
        await tx.flows.delete(flow_id)
        await tx.audit.append(
            AuditEvent(EventType.FLOW_EXPIRED, Outcome.INFO, "flow_expired", details={"flow": kind}), ctx
        )
    if record is None or browser_secret is None or record.kind != kind:
        return None
    return record.return_to if hmac.compare_digest(record.binding, browser_binding(browser_secret)) else None


class FlowEnvelope(Protocol):
    """What every flow carries besides its own fields."""

    @property
    def id(self) -> str: ...
    @property
    def state(self) -> StrEnum: ...
    @property
    def issued_at(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def csrf_token(self) -> str: ...
    @property
    def binding(self) -> str: ...
    @property
    def return_to(self) -> str | None: ...
    @property
    def messages(self) -> tuple[Message, ...]: ...


def to_record(flow: FlowEnvelope, kind: str, payload: dict[str, Any]) -> FlowRecord:
    """A flow as stored: the shared envelope, and its own fields as JSON (never pickle)."""
    return FlowRecord(
        id=flow.id,
        kind=kind,
        state=str(flow.state),
        issued_at=flow.issued_at,
        expires_at=flow.expires_at,
        csrf_token=flow.csrf_token,
        binding=flow.binding,
        return_to=flow.return_to,
        payload=dump({**payload, "messages": [m.as_dict() for m in flow.messages]}),
    )


E = TypeVar("E", bound=StrEnum)


def envelope(record: FlowRecord, states: type[E]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The shared fields of a stored flow, checked, and its own fields still as JSON data."""
    data = load(record.payload)
    try:
        state = states(record.state)
    except ValueError as exc:
        raise FlowInvalid("unknown state") from exc
    shared = {
        "id": record.id,
        "state": state,
        "issued_at": record.issued_at,
        "expires_at": record.expires_at,
        "csrf_token": record.csrf_token,
        "binding": record.binding,
        "return_to": record.return_to,
        "messages": tuple(Message(**m) for m in data.get("messages", [])),
    }
    return shared, data


def dump(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)


def load(payload: str) -> dict[str, Any]:
    value = json.loads(payload)
    if not isinstance(value, dict):
        raise FlowInvalid("flow payload is not an object")
    return value
