"""The audit trail: events go to the journal at once and to the sinks from a background thread.

:meth:`AuditTrail.record` serialises the events and appends them to this process's journal
segment (one ``write``, microseconds) — it never waits for a sink and never raises into the
transaction. A delivery thread hands each sink, in order, the records its cursor has not passed,
in batches; a sink that fails is retried after ``retry_s`` while the others go on, and the events
wait on disk meanwhile. A sink is handed a record again only if it failed before its cursor moved,
so the database sink (which ignores an event id it already holds) takes each event exactly once,
and a syslog sink sends each once unless the process dies between sending a batch and noting it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from xds.audit import capture
from xds.audit.journal import Journal, Segment, pending
from xds.audit.message import AuditMessage
from xds.audit.requester import Requester

log = logging.getLogger("xds.audit")
BATCH = 500
GATHER_S = 0.05  # the delivery thread lets events gather this long after being woken
POLL_S = 0.1  # a delivery process looks for new events this often
MAX_LAG_S = 2.0  # ... and lets them gather at most this long while more keep arriving
BUSY_LAG_S = 30.0  # ... or this long while the CPUs are busy too: idle less than BUSY_IDLE of the time
BUSY_IDLE = 0.2
SYNC_S = 1.0  # ... meanwhile putting them on the disk this often


@dataclass(frozen=True)
class Record:
    """One event as the sinks see it: its id, time, the DICOM XML and the access-log summary."""

    event_uuid: str
    time: str  # ISO 8601 UTC
    xml: str
    summary: dict[str, object]

    def to_bytes(self) -> bytes:
        return json.dumps(
            {"id": self.event_uuid, "time": self.time, "xml": self.xml, "summary": self.summary},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, position: str = "") -> Record:
        """The record of one spool entry: an exchange :mod:`xds.audit.capture` spooled (its event id
        made from the entry's ``position``, ``segment:offset``, the same each time it is read), an
        event as the request path spooled it (a JSON list: the message's and the requester's
        plain values), built into its XML here, or a record spooled whole (a JSON object, as
        earlier versions wrote them)."""
        if data[:1] in (capture.MARK, capture.QUERY):
            return cls.of(*capture.rebuild(data, position))
        obj = json.loads(data)
        if isinstance(obj, list):
            msg, who = obj
            return cls.of(AuditMessage.from_wire(msg), Requester(*who) if who else None)
        return cls(obj["id"], obj["time"], obj["xml"], obj["summary"])

    @classmethod
    def of(cls, msg: AuditMessage, requester: Requester | None = None) -> Record:
        return cls(msg.event_uuid, _iso(msg), msg.xml().decode("utf-8"), summary(msg, requester))


def spooled(msg: AuditMessage, requester: Requester | None) -> bytes:
    """What the request path appends to the journal for one event: its plain values, no XML."""
    who = None
    if requester is not None:
        r = requester
        who = [r.subject, r.hpr_number, r.role, r.organisation, r.organisation_id, r.purpose_of_use]
        who += [r.patient, r.issuer]
    return json.dumps([msg.to_wire(), who], separators=(",", ":")).encode("ascii")


def _iso(msg: AuditMessage) -> str:
    return msg.when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summary(msg: AuditMessage, requester: Requester | None) -> dict[str, object]:
    """What the access log shows of an event (and the database indexes)."""
    who = requester or Requester()
    return {
        "event": msg.event_id.text,
        "transaction": msg.type_codes[0].code if msg.type_codes else "",
        "action": msg.action,
        "outcome": msg.outcome,
        "description": msg.outcome_description,
        "patients": msg.patients(),
        "documents": msg.documents(),
        "subject": who.subject,
        "hpr": who.hpr_number,
        "role": who.role,
        "organisation": who.organisation,
        "organisation_id": who.organisation_id,
        "purpose": who.purpose_of_use,
        "btg": who.break_the_glass,
        "source": msg.source.source_id,
    }


class Sink(Protocol):
    """Where audit records go (a database table, a syslog collector). ``deliver`` takes a batch
    whole or raises; the trail then keeps the batch and asks again later."""

    name: str

    def deliver(self, records: Sequence[Record]) -> None: ...

    def close(self) -> None: ...


class Delivery(Protocol):
    """A process that delivers this one's events (:class:`xds.audit.delivery.DeliveryProcess`)."""

    def start(self, owner: str) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...


class IdleShare:
    """The share of the machine's CPU time spent idle (or waiting for I/O) since the last call, from
    ``/proc/stat`` (Linux; None elsewhere, and on the first call)."""

    def __init__(self, path: str = "/proc/stat") -> None:
        self.path = path
        self._last: tuple[int, int] | None = None

    def __call__(self) -> float | None:
        try:
            with open(self.path, "rb") as fh:
                fields = [int(f) for f in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        total, idle = sum(fields[:8]), sum(fields[3:5])  # user .. steal; idle, iowait
        last, self._last = self._last, (total, idle)
        if last is None or total <= last[0]:
            return None
        return (idle - last[1]) / (total - last[0])


class AuditTrail:
    """The queue between the transactions and the sinks (one per process).

    Delivery runs in a thread of this process (:meth:`start`), or in a delivery process when
    ``delivery`` is given (:class:`xds.audit.delivery.DeliveryProcess`: the app's command for it);
    a delivery process itself makes its trail with ``owner``, the name of the process it delivers
    for, and runs :meth:`serve`."""

    def __init__(
        self,
        spool_dir: str | Path,
        sinks: Sequence[Sink],
        *,
        retry_s: float = 1.0,
        owner: str = "",
        delivery: Delivery | None = None,
    ) -> None:
        self.sinks = list(sinks)
        self.spool_dir = Path(spool_dir)
        self.journal = Journal(spool_dir, [s.name for s in self.sinks], owner=owner, write=not owner)
        self.retry_s = retry_s
        self.delivery = delivery
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._stop = False
        self._down_until: dict[str, float] = {}
        self._thread: threading.Thread | None = None

    # --- the transactions' side -----------------------------------------------------------------
    def record(self, messages: Sequence[AuditMessage], requester: Requester | None = None) -> None:
        """Append the events to the journal and wake the delivery thread. Never raises.

        Only the events' plain values are written here (one ``write`` each); their XML, syslog
        frames and database rows are made by the delivery side (:meth:`Record.from_bytes`)."""
        try:
            for msg in messages:
                self.journal.append(spooled(msg, requester))
        except Exception:
            log.exception("audit event could not be written to the journal")
        self._woken()

    def append(self, entry: bytes) -> None:
        """Append one spool entry made already (:func:`xds.audit.capture.capture`). Never raises."""
        self.append_pair(entry, b"")

    def append_pair(self, head: bytes, body: bytes) -> None:
        """:meth:`append` of the entry ``head + body``, not made first (:meth:`Journal.append_pair`)."""
        try:
            self.journal.append_pair(head, body)
        except Exception:
            log.exception("audit event could not be written to the journal")
        self._woken()

    def writer(self) -> Callable[[bytes, bytes], None]:
        """What appends an entry ``head + body`` with the fewest steps, for a caller that contains
        its own failures: the journal's own :meth:`Journal.append_pair` when a delivery process
        delivers (no thread here to wake; it may raise), else :meth:`append_pair`."""
        return self.journal.append_pair if self.delivery is not None else self.append_pair

    def _woken(self) -> None:
        if self._thread is not None:
            self._idle.clear()
            self._wake.set()

    # --- delivery -------------------------------------------------------------------------------
    def start(self) -> AuditTrail:
        if self.delivery is not None:
            self.delivery.start(self.journal.name)
        elif self._thread is None:
            self._thread = threading.Thread(target=self._run, name="xds-audit", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(timeout=self.retry_s)
            # let a moment's events gather: one batch (one commit, one send) instead of many
            time.sleep(GATHER_S)
            self._wake.clear()
            self._pass()

    def _pass(self) -> None:
        try:
            if self.deliver_pending() and not self._stop:
                self._idle.set()
                self.journal.stock()  # up to date: one segment for the writers' pool, if short
        except Exception:
            log.exception("audit delivery failed")
            time.sleep(self.retry_s)

    def serve(self, alive: Callable[[], bool], idle: Callable[[], float | None] | None = None) -> None:
        """A delivery process's loop while ``alive()`` (its owner lives, it was not told to stop),
        then what can be delivered within a moment.

        It looks every :data:`POLL_S`. While events keep arriving it lets them gather, untouched,
        for up to :data:`MAX_LAG_S` — or, while the CPUs are busy (``idle()``, the share of CPU
        time idle since it last looked, under :data:`BUSY_IDLE`: a burst), for up to
        :data:`BUSY_LAG_S`; it delivers as soon as they stop (a lull) or when that time is up. So
        a burst is not slowed by building, storing and sending its own audit messages (their CPU,
        the caches and the disk they would take from it); they are delivered in large batches
        after it, and never more than that behind. The spool is put on the disk (:meth:`Journal.sync`)
        every :data:`SYNC_S` meanwhile and as each delivery begins: the events are safe from a
        killed process from the moment they are appended, and from a power failure at most about
        that long after."""
        last = -1
        behind_since: float | None = None
        synced = time.monotonic()
        idle_share = idle or IdleShare()
        while alive() and not self._stop:
            time.sleep(POLL_S)
            size = self.journal.appended()
            arriving, last = size != last, size
            now = time.monotonic()
            share = idle_share()
            if arriving:
                behind_since = now if behind_since is None else behind_since
                busy = share is not None and share < BUSY_IDLE
                if now - behind_since < (BUSY_LAG_S if busy else MAX_LAG_S):
                    if now - synced >= SYNC_S:
                        self.journal.sync()
                        synced = now
                    continue
            self._pass()
            synced = now
            behind_since = now if arriving else None
        self.stop()

    def deliver_pending(self) -> bool:
        """Deliver what each available sink has not taken; True when every sink is up to date."""
        done = True
        now = time.monotonic()
        built: dict[
            tuple[str, int], Record | None
        ] = {}  # each entry built once per pass, whichever sinks take it
        segments = self.journal.segments()
        self.journal.sync()
        for segment in segments:
            for sink in self.sinks:
                if self._down_until.get(sink.name, 0.0) > now:
                    done = False
                    continue
                if not self._drain(segment, sink, built):
                    done = False
            self.journal.settle(segment)
        return done and self.journal.backlog() == 0

    def _drain(self, segment: Segment, sink: Sink, built: dict[tuple[str, int], Record | None]) -> bool:
        """Hand ``sink`` what it has not taken of ``segment``; False when it failed."""
        while True:
            raw, end = segment.read(sink.name, BATCH)
            if not raw:
                return True
            name = segment.path.name
            records = [r for r in (_built(built, name, at, entry) for at, entry in raw) if r is not None]
            try:
                if records:
                    sink.deliver(records)
            except Exception as exc:
                if sink.name not in self._down_until:
                    log.warning("audit sink %s is unavailable (%s); events wait in the spool", sink.name, exc)
                self._down_until[sink.name] = time.monotonic() + self.retry_s
                return False
            if self._down_until.pop(sink.name, None) is not None:
                log.warning("audit sink %s is back; delivering the spooled events", sink.name)
            segment.advance(sink.name, end)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every sink has every event (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.delivery is not None:  # the delivery process's cursors tell
                if pending(self.spool_dir, self.journal.sinks) == 0:
                    return True
                time.sleep(0.05)
                continue
            if self._thread is None:
                if self.deliver_pending():
                    return True
                time.sleep(0.05)
                continue
            self._idle.clear()
            self._wake.set()
            if self._idle.wait(timeout=max(0.0, min(0.5, deadline - time.monotonic()))):
                return True
        return False

    def stop(self, timeout: float = 2.0) -> None:
        """Deliver what can be delivered within ``timeout``; the rest stays spooled for next time."""
        self.flush(timeout)
        self._stop = True
        self._wake.set()
        if self.delivery is not None:
            self.delivery.stop(timeout)
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                # still inside a sink: its files stay open (closing them under it could hand their
                # descriptor numbers to another file it then writes to); the process is ending
                log.warning("audit delivery still busy at shutdown; undelivered events stay spooled")
                return
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing audit sink %s", sink.name)
        self.journal.close()


def _built(
    cache: dict[tuple[str, int], Record | None], segment: str, offset: int, raw: bytes
) -> Record | None:
    """The record of one spool entry, built once per pass; None (logged) for an entry that cannot
    be read — it would never be, and must not hold up the events after it."""
    key = (segment, offset)
    if key in cache:
        return cache[key]
    try:
        record = Record.from_bytes(raw, f"{segment}:{offset}")
    except Exception:
        log.exception("an audit spool entry could not be read; it is skipped")
        record = None
    cache[key] = record
    return record
