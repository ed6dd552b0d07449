"""A deployment for a conformance replay when no target is given: ``xds serve`` in this process.

Registry, default repository and the ITI-8 feed on free loopback ports, on SQLite in a temporary
data directory (or the database URL given), with the plain IHE profile: the kit's patients are
fed over MLLP under NIST's assigning authority, not Norwegian person numbers. For the XUA tests,
one with the trust model required, trusting the replay's identity provider.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from xds.conformance.runner import Target
from xds.conformance.xua import XuaIdentity

HOME = "urn:oid:1.3.6.1.4.1.21367.13.70.200"  # a homeCommunityId for the replay's own deployment


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def xua_rules(xua: XuaIdentity) -> list:  # type: ignore[type-arg]
    """The access policy of the XUA deployment: the built-in table's care rules (clinical role, HPR
    number) for the kit's affinity domain — its classCodes, with no care-relationship attribute,
    which the kit's test users do not carry."""
    from xds.config import RuleConfig

    clinical = {"roles": ["LE", "SP"], "requires_hpr": True}
    return [
        RuleConfig("kit-care-read", ["TREAT"], ["read"], classes=sorted(xua.readable_classes), **clinical),  # type: ignore[arg-type]
        RuleConfig("kit-care-write", ["TREAT"], ["write"], **clinical),  # type: ignore[arg-type]
        RuleConfig("kit-owner-changes", ["TREAT"], ["update", "remove"], requires_owner=True),
    ]


@contextmanager
def local_deployment(
    database_url: str = "",
    data_dir: str | None = None,
    *,
    xua: XuaIdentity | None = None,
    tls: bool = False,
) -> Iterator[Target]:
    """``xua``: the deployment requires the trust model (``[trust] mode = "required"``) and trusts
    that identity provider and institution — for the kit's XUA tests. ``tls``: HTTPS with client
    certificates required (an ATNA secure node, ITI TF-2 §3.19), from a development CA made for it;
    the runner presents one of its institution certificates."""
    import uvicorn

    from xds.config import Config, IssuerConfig
    from xds.server import build_app
    from xds.trust.keys import init_keys

    with tempfile.TemporaryDirectory(prefix="xds-conformance-") as tmp:
        cfg = Config()
        cfg.server.host = "127.0.0.1"
        cfg.server.port = _free_port()
        cfg.server.data_dir = data_dir or tmp
        cfg.registry.database_url = database_url
        cfg.registry.profile = "none"
        cfg.registry.mllp_port = _free_port()
        cfg.registry.home_community_id = HOME  # serves the XCA responding gateway too
        if xua is not None:
            cfg.trust.mode = "required"
            cfg.trust.ca_file = xua.ca_file
            cfg.trust.audience = xua.audience
            cfg.issuers = [IssuerConfig(xua.issuer, xua.idp_cert_file)]
            cfg.rules = xua_rules(xua)
        client_tls = None
        if tls:
            keys = init_keys(f"{tmp}/tls", ["server", "runner"])
            server_id, runner = keys.institutions["server"], keys.institutions["runner"]
            cfg.server.tls_cert, cfg.server.tls_key = str(server_id.cert_path), str(server_id.key_path)
            cfg.server.tls_ca = str(keys.ca.cert_path)
            client_tls = (str(keys.ca.cert_path), str(runner.cert_path), str(runner.key_path))
        app = build_app(cfg)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=cfg.server.port,
                log_level="warning",
                **cfg.server.uvicorn_protocol(),
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the conformance deployment did not start")
            time.sleep(0.02)
        base = f"{'https' if tls else 'http'}://127.0.0.1:{cfg.server.port}"
        try:
            yield Target(
                f"{base}/registry",
                ("127.0.0.1", cfg.registry.mllp_port),
                f"{base}/repository",
                client_tls,
                xca_query_url=f"{base}/xca/query",
                xca_retrieve_url=f"{base}/xca/retrieve",
                home=HOME,
            )
        finally:
            server.should_exit = True
            thread.join(timeout=30)
