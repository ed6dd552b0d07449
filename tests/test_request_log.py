"""The request log (xds/service_log.py): one structured line per request, with what an operator
needs and nothing of what a patient would not want in a log file."""

from __future__ import annotations

import json
import logging
import random
import ssl
from pathlib import Path

import httpx
import pytest
from support import RunningServer, make_config

from xds import samples
from xds.config import Config
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.service_log import FIELDS, JsonFormatter, TextFormatter, configure_logging, startup_warnings
from xds.soap.envelope import build_request
from xds.trust.keys import init_keys


def post(url: str, body: bytes, action: str, **kwargs: object) -> httpx.Response:
    data, ctype = build_request(action, body, to=url)
    return httpx.post(url, content=data, headers={"Content-Type": ctype}, timeout=30, **kwargs)  # type: ignore[arg-type]


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.request for r in caplog.records if r.name == "xds.request"]  # type: ignore[attr-defined]


def test_one_line_per_request_with_outcome_codes_and_sizes(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="xds.request")
    url = f"{server.url}/registry"
    sample = samples.submission(rng=random.Random(3))
    body = ebrim.submit_objects_request_bytes(sample.submission)
    assert post(url, body, v.ACTION_REGISTER).status_code == 200
    post(url, body, v.ACTION_REGISTER)  # the same uniqueIds again: refused
    httpx.post(url, content=b"<not-soap", headers={"Content-Type": "application/soap+xml"}, timeout=10)
    httpx.get(f"{url}?wsdl", timeout=10)
    stored, refused, fault, wsdl = lines(caplog)
    assert set(stored) == set(FIELDS)
    assert stored["endpoint"] == "POST /registry" and stored["action"] == v.ACTION_REGISTER
    assert (stored["outcome"], stored["xds"], stored["errors"]) == ("success", "Success", "-")
    assert stored["in"] > len(body) and stored["out"] > 100 and stored["ms"] > 0  # type: ignore[operator]
    assert str(stored["peer"]).startswith("127.0.0.1:") and stored["tls"] == "-"
    assert (refused["outcome"], refused["xds"]) == ("failure", "Failure")
    assert refused["errors"] == v.XDSDuplicateUniqueIdInRegistry
    assert fault["outcome"] == "fault" and str(fault["errors"]).startswith("env:Sender")
    assert (wsdl["endpoint"], wsdl["outcome"]) == ("GET /registry", "ok")
    levels = [r.levelno for r in caplog.records if r.name == "xds.request"]
    assert levels == [logging.INFO, logging.WARNING, logging.WARNING, logging.INFO]
    # ids and codes only: no patient, no metadata, no error context
    text = "\n".join(TextFormatter().format(r) for r in caplog.records if r.name == "xds.request")
    assert sample.patient.split("^")[0] not in text and "codeContext" not in text
    assert sample.documents[0].unique_id not in text


def test_text_and_json_formats() -> None:
    record = logging.LogRecord("xds.request", logging.INFO, "", 0, "", None, None)
    record.request = dict.fromkeys(FIELDS, "-") | {"tls": "CN=Ahus HF,O=Ahus", "ms": 1.5}
    text = TextFormatter().format(record)
    assert text.startswith('time=- peer=- tls="CN=Ahus HF,O=Ahus" ') and "ms=1.5" in text
    assert json.loads(JsonFormatter().format(record)) == record.request
    other = logging.LogRecord("xds", logging.WARNING, "", 0, "trust is off", None, None)
    assert json.loads(JsonFormatter().format(other))["message"] == "trust is off"
    config = Config()
    config.server.log_format = "yaml"
    with pytest.raises(ValueError, match="log_format"):
        configure_logging(config.server)


def test_the_tls_client_subject_is_logged(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="xds.request")
    keys = init_keys(tmp_path / "keys", ["server", "kommune"])
    cfg = make_config(tmp_path / "data", database_url)
    server_id, client = keys.institutions["server"], keys.institutions["kommune"]
    cfg.server.tls_cert, cfg.server.tls_key = str(server_id.cert_path), str(server_id.key_path)
    cfg.server.tls_ca = str(keys.ca.cert_path)
    ctx = ssl.create_default_context(cafile=str(keys.ca.cert_path))
    ctx.load_cert_chain(str(client.cert_path), str(client.key_path))
    with RunningServer(cfg) as server:
        assert httpx.get(f"{server.url}/health", verify=ctx, timeout=10).status_code == 200
    [line] = lines(caplog)
    assert "CN=kommune" in str(line["tls"]), line


def test_start_up_warns_when_trust_is_off_on_an_address_others_reach() -> None:
    config = Config()
    assert startup_warnings(config) == []  # 127.0.0.1
    config.server.host = "0.0.0.0"
    [warning] = startup_warnings(config)
    assert "trust checking is off" in warning and "0.0.0.0" in warning
    config.trust.mode = "required"
    assert startup_warnings(config) == []
    config.trust.repository_mode = "off"
    assert len(startup_warnings(config)) == 1
    config.server.host, config.trust.repository_mode = "::1", ""
    assert startup_warnings(config) == []


def test_a_request_cannot_break_or_colour_its_log_line(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """What the client chose (path, action) reaches the log with its control and line-separating
    characters escaped in both formats: C1 controls (CSI 0x9b, NEL 0x85) and U+2028 included."""
    caplog.set_level(logging.INFO, logger="xds.request")
    url = f"{server.url}/registry"
    httpx.get(f"{server.url}/registry%0Aforged%C2%85line%E2%80%A8x%C2%9B31m", timeout=10)
    action = b'application/soap+xml; action="urn:a\x85forged\x9b31m\xe2\x80\xa8x"'
    httpx.post(url, content=b"<not-soap", headers={"Content-Type": action}, timeout=10)
    records = [r for r in caplog.records if r.name == "xds.request"]
    assert len(records) == 2
    for formatter in (TextFormatter(), JsonFormatter()):
        for record in records:
            text = formatter.format(record)
            assert text.isprintable(), repr(text)
            assert len(text.splitlines()) == 1
    parsed = json.loads(JsonFormatter().format(records[1]))
    assert parsed["action"] == "urn:a\x85forged\x9b31m\xe2\x80\xa8x"  # escaped, not lost
