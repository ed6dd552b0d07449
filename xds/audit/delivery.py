"""A delivery process: a server process's audit events carried to the sinks by a helper process.

The transactions only append their events to the spool (:mod:`xds.audit.journal`); building the
audit messages, the syslog frames and the database rows, and the sending, happen in a child
process running at the lowest scheduling priority (:data:`NICE`; on Linux ``SCHED_IDLE``). So the
work never takes the interpreter lock from the worker's event loop and the kernel gives the CPU to
the transactions first: under load the delivery falls behind (the events wait on disk) and catches
up as soon as there is CPU to spare.

:class:`DeliveryProcess` is the server process's handle: it starts the child with the command the
app gives (the app knows how to build the sinks), starts another if it ends, and stops it.
:func:`serve` is the child's side: it delivers for its parent (named in :data:`OWNER_ENV`) until
told to stop or until the parent is gone, then ends, so that the next deliverer adopts what is
left (the spool's locks see to it that only one delivers each segment).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xds.audit.trail import AuditTrail

log = logging.getLogger("xds.audit")
OWNER_ENV = "XDS_AUDIT_DELIVERY_FOR"
NICE = 19  # added to the server's nice value: the kernel runs the transactions first
RESTART_S = 1.0


class DeliveryProcess:
    """The child that delivers this process's audit events (started again if it ends)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = ""
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def start(self, owner: str) -> None:
        self._owner = owner
        self._launch()
        self._watcher = threading.Thread(target=self._watch, name="xds-audit-delivery", daemon=True)
        self._watcher.start()

    def _launch(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            self._proc = subprocess.Popen(
                self.argv, env={**self.env, OWNER_ENV: self._owner}, stdin=subprocess.DEVNULL
            )

    def _watch(self) -> None:
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                return
            code = proc.wait()
            if self._stopping.wait(RESTART_S):
                return
            log.warning("the audit delivery process ended (exit status %s); starting another", code)
            self._launch()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self, timeout: float = 5.0) -> None:
        """Tell the child to deliver what it can within a moment and end."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def lower_priority() -> None:
    """Run this process at the lowest priority (:data:`NICE`; on Linux ``SCHED_IDLE``). The
    delivery process's main calls it before any thread is started: Linux sets both for the
    calling thread only, and a new thread takes its creator's (a database's checkpointer started
    earlier would compete with the transactions at theirs)."""
    try:
        os.nice(NICE)
        # on Linux: the CPU only when no one else wants it (SCHED_IDLE); nice 19 still took a
        # share from the transactions whenever they woke from waiting on the disk
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # pragma: no cover - a platform without them
        pass


def serve(make_trail: Callable[[str], AuditTrail]) -> int:
    """The delivery process's main: deliver for the parent named in the environment."""
    owner = os.environ.get(OWNER_ENV, "")
    pid = owner.split("-", 1)[0]
    if not pid.isdigit():
        log.error("%s names no process to deliver audit events for", OWNER_ENV)
        return 2
    parent = int(pid)  # the owner, not whoever is the parent by now: it may have ended already
    if os.getppid() != parent:
        return 0
    stopped = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    trail = make_trail(owner)  # (this process's priority is lowered by its main: lower_priority)
    trail.serve(lambda: not stopped.is_set() and os.getppid() == parent)
    return 0
