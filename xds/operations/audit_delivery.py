"""The server's audit trail (ITI TF-2a §3.20): its sinks, and the process that delivers to them.

:func:`audit_trail` is what a server process records into; its events are delivered by a child
process (:class:`xds.audit.delivery.DeliveryProcess`) that runs this module
(``python -m xds.operations.audit_delivery``) with the configuration in :data:`CONFIG_ENV`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

from xds.config import Config

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from xds.audit.trail import AuditTrail

CONFIG_ENV = "XDS_AUDIT_DELIVERY_CONFIG"


def audit_sinks(config: Config, engine: Engine | None) -> list[Any]:
    """The sinks ``[audit]`` names: the database (``engine``'s) and each syslog collector."""
    from xds.audit.syslog import SyslogSink, parse_targets

    ac = config.audit
    sinks: list[Any] = []
    if ac.database and engine is not None:
        from xds.database.audit_store import DatabaseAuditSink

        sinks.append(DatabaseAuditSink(engine))
    for target in parse_targets(ac.syslog):
        sinks.append(
            SyslogSink(
                target, ca_file=ac.syslog_ca_file, cert_file=ac.syslog_cert_file, key_file=ac.syslog_key_file
            )
        )
    return sinks


def audit_trail(config: Config, engine: Engine | None, *, process: bool = True) -> AuditTrail | None:
    """The trail a server process records into (None when ``[audit]`` names no sink); with
    ``process`` its events are delivered by a child process, else by a thread of this one."""
    if not config.audit.enabled():
        return None
    from xds.audit.delivery import DeliveryProcess
    from xds.audit.trail import AuditTrail

    delivery = None
    if process:
        env = {**os.environ, CONFIG_ENV: json.dumps(config.to_dict())}
        delivery = DeliveryProcess([sys.executable, "-m", __name__], env)
    return AuditTrail(
        config.audit.spool(config.server.data_dir), audit_sinks(config, engine), delivery=delivery
    )


def main() -> int:
    """The delivery process: the configuration from :data:`CONFIG_ENV`, the parent's spool."""
    from xds.audit import delivery
    from xds.audit.trail import AuditTrail
    from xds.database.audit_store import open_audit_engine
    from xds.service_log import configure_logging

    delivery.lower_priority()  # first: the threads started below (the checkpointer's) take it
    config = Config.from_dict(json.loads(os.environ[CONFIG_ENV]))
    configure_logging(config.server)
    engine = None
    if config.audit.database:
        engine = open_audit_engine(config.registry.url(config.server.data_dir), pool_size=1)

    def trail(owner: str) -> AuditTrail:
        return AuditTrail(
            config.audit.spool(config.server.data_dir), audit_sinks(config, engine), owner=owner
        )

    try:
        return delivery.serve(trail)
    finally:
        if engine is not None:
            engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
