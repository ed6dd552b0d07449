"""Mutual TLS on loopback (ATNA secure node, ITI TF-2 §3.19): a client certificate from the trusted
CA gets in, a client without one or with another CA's certificate does not."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
from support import RunningServer, make_config

from xds.trust.keys import init_keys


def test_mutual_tls(tmp_path: Path, database_url: str) -> None:
    keys = init_keys(tmp_path / "keys", ["server", "kommune"])
    rogue = init_keys(tmp_path / "rogue", ["rogue"], ca_name="Not our CA")
    cfg = make_config(tmp_path / "data", database_url)
    server_id = keys.institutions["server"]
    cfg.server.tls_cert, cfg.server.tls_key = str(server_id.cert_path), str(server_id.key_path)
    cfg.server.tls_ca = str(keys.ca.cert_path)
    client = keys.institutions["kommune"]

    def context(cert: tuple[str, str] | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(keys.ca.cert_path))
        if cert:
            ctx.load_cert_chain(*cert)
        return ctx

    with RunningServer(cfg) as server:
        assert server.url.startswith("https://")
        ok = httpx.get(f"{server.url}/health", verify=context((str(client.cert_path), str(client.key_path))))
        assert ok.status_code == 200
        for cert in (
            None,
            (str(rogue.institutions["rogue"].cert_path), str(rogue.institutions["rogue"].key_path)),
        ):
            with pytest.raises(httpx.TransportError):
                httpx.get(f"{server.url}/health", verify=context(cert), timeout=5)
        # the server's own certificate must be trusted by the client, too
        with pytest.raises(httpx.TransportError):
            httpx.get(
                f"{server.url}/health",
                verify=ssl.create_default_context(cafile=str(rogue.ca.cert_path)),
                timeout=5,
            )
        again = httpx.get(
            f"{server.url}/health", verify=context((str(client.cert_path), str(client.key_path)))
        )
        assert again.status_code == 200
