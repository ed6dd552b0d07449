"""The initiating gateway's audit events for what it asks (ITI TF-2a §3.20.4; ITI TF-2b §3.38.5.1.1,
§3.39.5.1.1): the Initiating Gateway audits ITI-38 as a Document Consumer audits ITI-18 (Query,
EventActionCode "E") and ITI-39 as a Document Consumer audits ITI-43 (Import, "C"), each under its own
EventTypeCode — itself the Source, the community's endpoint the Destination, and as human requestor
the consumer whose verified assertion travels on in the request. What it answers its own consumers
(ITI-18 and ITI-43 at ``/ig/registry`` and ``/ig/repository``) is audited by the endpoints' observer
like any other answered transaction.
"""

from __future__ import annotations

import logging
import socket

from lxml import etree

from xds.audit import events
from xds.audit.message import AuditSource
from xds.audit.requester import from_context
from xds.audit.trail import AuditTrail

log = logging.getLogger("xds.audit")


class RequestAudit:
    """Records one audit message per ITI-38 / ITI-39 exchange the gateway asked (two for an ITI-39
    answered in part: one per outcome)."""

    def __init__(self, trail: AuditTrail, source: AuditSource) -> None:
        self.trail = trail
        self.source = source
        self.host = socket.gethostname()

    def requested(
        self,
        action: str,
        request: etree._Element,
        response: etree._Element | bytes | None,
        url: str,
        fault: str,
        security: object | None,
    ) -> None:
        """``fault``: why the community gave no usable answer ("" when it did); ``security``: the
        verified context of the consumer's request (None when it was not verified)."""
        try:
            who = from_context(security)
            exchange = events.Exchange(
                action=action,
                request=request,
                response=response,
                fault=fault,
                security=who,
                client=self.host,
                server=url,
            )
            self.trail.record(events.requester_events(exchange, self.source), who)
        except Exception:
            log.exception("audit event for %s could not be built", action)
