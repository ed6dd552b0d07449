"""What the ``xds`` command shows a person: transfer progress on a terminal, and one plain line
instead of a traceback when a server cannot be reached."""

from __future__ import annotations

import ssl
import sys
import time
from typing import TextIO

import httpx

PROGRESS_FROM = 10 * 2**20  # transfers larger than 10 MiB show their progress


class TerminalProgress:
    """``progress(done, total)`` for a transfer: a self-overwriting line on stderr, only when stderr
    is a terminal and the transfer is larger than 10 MiB (``total`` 0: size not known beforehand)."""

    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 0.25) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.interval = interval
        self.shown = False
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or max(done, total) <= PROGRESS_FROM:
            return
        now = time.monotonic()
        if now - self._last < self.interval and done != total:
            return
        self._last = now
        of = f" of {total / 2**20:,.1f} MiB ({100 * done // total}%)" if total else " MiB"
        self.stream.write(f"\rxds: {self.label} {done / 2**20:,.1f}{of}   ")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False


def network_failure(exc: BaseException) -> str | None:
    """One line for a failure to talk to a server (connection, timeout, TLS); None for anything else."""
    if isinstance(exc, httpx.TimeoutException):
        what = "no answer in time (timed out)"
    elif isinstance(exc, httpx.ConnectError | ssl.SSLError) and _tls_error(exc):
        what = f"TLS failed: {_tls_error(exc)}"
    elif isinstance(exc, httpx.ConnectError):
        what = f"cannot connect: {_reason(exc)}"
    elif isinstance(exc, httpx.RemoteProtocolError):
        what = f"the server broke off the exchange: {_reason(exc)}"
    elif isinstance(exc, httpx.TransportError):
        what = _reason(exc)
    else:
        return None
    try:
        where = f"{exc.request.url.copy_with(query=None)}: " if isinstance(exc, httpx.RequestError) else ""
    except RuntimeError:  # no request attached
        where = ""
    return f"{where}{what}"


def _tls_error(exc: BaseException) -> str:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return getattr(seen, "verify_message", None) or seen.reason or str(seen)
        seen = seen.__cause__ or seen.__context__
    return ""


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.rsplit("] ", 1)[-1] if text.startswith("[") else (text or type(exc).__name__)
