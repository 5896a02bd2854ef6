"""Security notices by email, sent after the change they report has committed."""

from __future__ import annotations

import logging

from alacop.core.accounts import User
from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.mail import compose

log = logging.getLogger("alacop.mail")


async def notify(deps: Deps, user: User, kind: str, ctx: RequestContext, detail: str = "") -> bool:
    """Send one notice; a mail failure is logged and audited but never undoes the change."""
    mail = compose(
        kind,
        to=user.email,
        name=user.name,
        username=f"{user.username}@{deps.domain}",
        portal=deps.portal_name,
        support=deps.support_name,
        detail=detail,
    )
    try:
        await deps.mailer.send(mail)
    except Exception as exc:  # SMTP, DNS and disk errors all mean the same to the user: not sent
        log.warning("notice %s to user %s not sent: %s", kind, user.id, exc.__class__.__name__)
        async with deps.store.transaction() as tx:
            await tx.audit.append(
                AuditEvent(
                    EventType.NOTIFICATION_FAILED,
                    Outcome.FAILURE,
                    kind,
                    subject_id=user.id,
                    subject_name=user.username,
                    agency_id=user.agency_id,
                    details={"error": exc.__class__.__name__},
                ),
                ctx,
            )
        return False
    return True
