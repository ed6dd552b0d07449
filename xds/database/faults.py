"""What a failure of the database or the disk means to a client: one XDS error of the profile's.

ITI TF-3 Table 4.2.4.1-2 has an error for each way a registry or repository can fail on its own
side: out of resources (a full disk or database), busy (a lock held too long, no connection free),
the registry not available (a repository that cannot reach it), and the internal error for the
rest. :func:`classify` reads an exception — the driver's, SQLAlchemy's wrapping of it, or the
operating system's — and :class:`FailureAnswers` turns what a SOAP handler raised into the
transaction's own answer (a RegistryResponse, an AdhocQueryResponse …) carrying that error, so a
client never gets an HTTP 500 Receiver fault for a failure the profile has a word for.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError, XdsException
from xds.metadata.registry_response import registry_response
from xds.soap.envelope import SoapRequest, SoapResponse

log = logging.getLogger("xds.faults")

FULL = "full"
BUSY = "busy"
UNAVAILABLE = "unavailable"
ERROR = "error"

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# SQLite primary result codes (https://sqlite.org/rescode.html)
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 5, 6, 10, 13, 14
# PostgreSQL SQLSTATEs (Appendix A): 53100 disk_full, 53200 out_of_memory, 53300
# too_many_connections, 55P03 lock_not_available, 57014 query_canceled (lock_timeout,
# statement_timeout); class 08 connection exceptions and 57P01-57P05 shutdowns mean unavailable.
_PG_KINDS = {"53100": FULL, "53200": FULL, "53300": BUSY, "55P03": BUSY, "57014": BUSY}


# told the kind of each failure answered (the metrics count them)
observers: list[Callable[[str], None]] = []


class DatabaseBusy(Exception):
    """The database's write lock stayed taken (by another process) past the configured wait."""


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]


def classify(exc: BaseException) -> str:
    """FULL, BUSY, UNAVAILABLE or ERROR: what ``exc`` (or an exception behind it) says failed."""
    for e in _causes(exc):
        kind = _kind(e)
        if kind:
            return kind
    return ERROR


def _kind(e: BaseException) -> str:
    if isinstance(e, DatabaseBusy | PoolTimeout):
        return BUSY
    if isinstance(e, DisconnectionError):
        return UNAVAILABLE
    if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
        return FULL
    if isinstance(e, sqlite3.Error):
        code = (getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF
        if code == _SQLITE_FULL or "disk is full" in str(e):
            return FULL
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED) or "database is locked" in str(e):
            return BUSY
        if code in (_SQLITE_IOERR, _SQLITE_CANTOPEN):
            return UNAVAILABLE
        return ""
    if isinstance(e, DBAPIError) and e.connection_invalidated:
        return UNAVAILABLE
    state = getattr(e, "sqlstate", None)
    if isinstance(state, str):
        if state in _PG_KINDS:
            return _PG_KINDS[state]
        if state.startswith("08") or state.startswith("57P"):
            return UNAVAILABLE
        return ""
    if type(e).__name__ == "OperationalError" and not isinstance(e, DBAPIError):
        return UNAVAILABLE  # a driver's connection failure (refused, reset, timed out): no SQLSTATE
    return ""


@dataclass(frozen=True)
class FaultCodes:
    """The error codes one side answers with for each kind of failure, and who it is."""

    full: str
    busy: str
    unavailable: str
    error: str
    who: str

    def errors(self, exc: BaseException, *, wrote: bool = False) -> list[XdsError]:
        """The RegistryError for ``exc`` (logged); ``wrote``: the request would have stored."""
        kind = classify(exc)
        for observe in observers:
            observe(kind)
        after = "; nothing was stored" if wrote else ""
        if kind == ERROR:
            log.error("%s failed", self.who, exc_info=exc)
        else:
            log.warning("%s: %s (%s: %s)", self.who, kind, type(exc).__name__, exc)
        if kind == FULL:
            return [XdsError(self.full, f"{self.who} is out of storage space{after}")]
        if kind == BUSY:
            return [XdsError(self.busy, f"{self.who} is busy: its database is locked{after}; try again")]
        if kind == UNAVAILABLE:
            return [XdsError(self.unavailable, f"{self.who}'s database is not available{after}")]
        return [XdsError(self.error, f"{self.who} could not process the request{after}")]


REGISTRY = FaultCodes(
    v.XDSRegistryOutOfResources, v.XDSRegistryBusy, v.XDSRegistryError, v.XDSRegistryError, "the registry"
)
REPOSITORY = FaultCodes(
    v.XDSRepositoryOutOfResources,
    v.XDSRepositoryBusy,
    v.XDSRepositoryError,
    v.XDSRepositoryError,
    "the repository",
)
# ITI-41: the repository stores, then registers; a registry it cannot reach is XDSRegistryNotAvailable
PROVIDE = FaultCodes(
    v.XDSRepositoryOutOfResources,
    v.XDSRepositoryBusy,
    v.XDSRegistryNotAvailable,
    v.XDSRepositoryError,
    "the repository",
)

BodyBuilder = Callable[[list[XdsError]], bytes]


@dataclass(frozen=True)
class Answer:
    """How one SOAP action answers a failure: its codes, response action and response body."""

    codes: FaultCodes
    action: str = ""  # "" = the request's action + "Response" (ITI-41/42/57/62/86)
    body: BodyBuilder = registry_response
    writes: bool = True


class FailureAnswers:
    """A :class:`xds.soap.endpoint.SoapEndpoint`'s answer to what a handler raised: the
    transaction's own response with the profile's error, instead of a Receiver fault.

    Actions not listed answer a RegistryResponse under the request's action + ``Response``, which
    is what every transaction that writes has (ITI-41, 42, 57, 62, 86).
    """

    def __init__(self, default: FaultCodes, answers: dict[str, Answer] | None = None) -> None:
        self.default = Answer(default)
        self.answers = answers or {}
        self.failures = 0  # database or disk failures answered (for metrics)

    def __call__(self, request: SoapRequest, exc: Exception) -> SoapResponse:
        answer = self.answers.get(request.action, self.default)
        if isinstance(exc, XdsException):
            errors = exc.errors
        else:
            self.failures += 1
            errors = answer.codes.errors(exc, wrote=answer.writes)
        return SoapResponse(answer.action or request.action + "Response", answer.body(errors))
