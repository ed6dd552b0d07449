"""What the service logs: one structured line per request, start-up warnings, the logging setup.

Each HTTP request answered gives one line on the ``xds.request`` logger, as ``key=value`` text or
one JSON object (``[server] log_format``): time, peer, TLS client subject, endpoint, action,
outcome, XDS status and error codes, duration and bytes in and out. Never document contents, query
parameters or an error's codeContext (they may name a patient): only addresses, certificate
names, actions and codes. Successes log at INFO, refusals and faults at WARNING, server errors at
ERROR, so ``[server] log_level = "warning"`` keeps only what went wrong.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import sys
import time
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from xds.config import Config, ServerConfig

log = logging.getLogger("xds.request")

_HEAD = 65536  # status, error codes and fault codes are read from the answer's first 64 KiB
_STATUS = re.compile(rb'\sstatus="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:(\w+)"')
_ERROR_CODE = re.compile(rb'errorCode="([^"]{1,128})"')
_FAULT_VALUE = re.compile(rb"<(?:[\w.-]+:)?Value>\s*([^<\s]{1,128})\s*</")
_ACTION = re.compile(rb'action="([^"]{1,256})"')
_BULK = (b"RegistryObjectList", b"DocumentResponse")  # error lists come before these
FIELDS = ("time", "peer", "tls", "endpoint", "action", "outcome", "xds", "errors", "ms", "in", "out")


class RequestLog:
    """ASGI middleware: one log line per HTTP request, written when its answer is complete."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, Any] = {"in": 0, "out": 0, "status": 0, "head": b"", "ctype": b""}

        async def receiving() -> Message:
            message = await receive()
            seen["in"] += len(message.get("body", b""))
            return message

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                for name, value in message.get("headers") or ():
                    if name == b"content-type":
                        seen["ctype"] = value
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if not seen["head"]:
                    seen["head"] = body[:_HEAD]
                seen["out"] += len(body)
            await send(message)

        try:
            await self.app(scope, receiving, sending)
        finally:
            _write(scope, seen, (time.perf_counter() - started) * 1000)


def _write(scope: Scope, seen: dict[str, Any], ms: float) -> None:
    status, head = seen["status"], seen["head"]
    xds_status = errors = fault = ""
    if head:
        bulk = min((i for i in (head.find(marker) for marker in _BULK) if i >= 0), default=len(head))
        found = _STATUS.search(head, 0, bulk)
        xds_status = found.group(1).decode() if found else ""
        codes = dict.fromkeys(m.group(1).decode("latin-1") for m in _ERROR_CODE.finditer(head, 0, bulk))
        errors = ",".join(list(codes)[:20])
        if b"Fault>" in head[:4096] or b":Fault" in head[:4096]:
            fault = ":".join(m.group(1).decode("latin-1") for m in _FAULT_VALUE.finditer(head[:4096]))
    outcome = _outcome(status, xds_status, fault)
    line = {
        "time": _now(),
        "peer": "{}:{}".format(*scope["client"]) if scope.get("client") else "-",
        "tls": ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_name") or "-",
        "endpoint": f"{scope.get('method', '')} {scope.get('path', '')}",
        "action": _request_action(scope) or ("" if fault else _answer_action(seen["ctype"])) or "-",
        "outcome": outcome,
        "xds": xds_status or "-",
        "errors": errors or fault or "-",
        "ms": round(ms, 2),
        "in": seen["in"],
        "out": seen["out"],
    }
    level = logging.ERROR if status >= 500 and not fault else logging.INFO
    if outcome in ("failure", "fault", "refused"):
        level = logging.WARNING
    if log.isEnabledFor(level):  # a record made directly: no caller lookup on every request
        record = log.makeRecord(log.name, level, __file__, 0, "request", None, None)
        record.request = line
        log.handle(record)


def _outcome(status: int, xds_status: str, fault: str) -> str:
    if fault:
        return "fault"
    if status >= 500:
        return "error"
    if status >= 400:
        return "refused"
    return {"Success": "success", "PartialSuccess": "partial", "Failure": "failure"}.get(xds_status, "ok")


def _request_action(scope: Scope) -> str:
    for name, value in scope.get("headers") or ():
        if name == b"content-type":
            found = _ACTION.search(value)
            return found.group(1).decode("latin-1") if found else ""
    return ""


def _answer_action(content_type: bytes) -> str:
    found = _ACTION.search(content_type)
    return found.group(1).decode("latin-1") if found else ""


_second: list[Any] = [-1, ""]  # the last whole second formatted, and its text


def _now() -> str:
    now = time.time()
    whole = int(now)
    if whole != _second[0]:
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    return f"{_second[1]}.{int((now - whole) * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    """``time level logger message``; a request line as ``key=value`` pairs (values with spaces quoted)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = getattr(record, "request", None)
        if line is None:
            return super().format(record)
        return (
            f"time={line['time']} peer={line['peer']} tls={_quoted(line['tls'])} "
            f"endpoint={_quoted(line['endpoint'])} action={_quoted(line['action'])} outcome={line['outcome']} "
            f"xds={line['xds']} errors={_quoted(line['errors'])} ms={line['ms']} in={line['in']} out={line['out']}"
        )


def _quoted(text: str) -> str:
    """A value as is, or as a JSON string when it holds a space or a quote (a certificate name);
    with every non-ASCII character escaped when it holds any the client could break or colour a
    log line with (control characters C0 and C1, NEL, U+2028)."""
    if not text.isprintable():
        return json.dumps(text)
    return json.dumps(text, ensure_ascii=False) if (" " in text or '"' in text or "=" in text) else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: a request line's fields, or time, level, logger and message."""

    def format(self, record: logging.LogRecord) -> str:
        line = getattr(record, "request", None)
        if line is None:
            line = {
                "time": _now(),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
            if record.exc_info:
                line["exception"] = self.formatException(record.exc_info)
        out = json.dumps(line, ensure_ascii=False)
        return out if out.isprintable() else json.dumps(line)  # C1 controls, U+2028 escaped too


def configure_logging(server: ServerConfig) -> None:
    """The process's logging from ``[server] log_level`` and ``log_format`` (text | json): one
    handler on stderr for every logger, uvicorn's included."""
    if server.log_format not in ("text", "json"):
        raise ValueError(f"[server] log_format must be text or json, not {server.log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if server.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(server.log_level.upper())
    log.disabled = not server.request_log
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    access = logging.getLogger("uvicorn.access")  # the request log says more, once
    access.handlers[:], access.propagate = [], False
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


def startup_warnings(config: Config) -> list[str]:
    """What an operator must hear at start-up: trust checking off on an address others can reach."""
    modes = {
        config.trust.registry_mode or config.trust.mode,
        config.trust.repository_mode or config.trust.mode,
    }
    if "off" in modes and not _loopback(config.server.host):
        return [
            f"trust checking is off ([trust] mode) while listening on {config.server.host}: "
            "anyone who reaches this address may register, query and retrieve without an assertion"
        ]
    return []


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
