"""MTOM/XOP: SOAP messages as ``multipart/related`` (W3C XOP 1.0, SOAP MTOM; ITI TF-2 §V.3.6).

The parser is incremental: the body is fed as it arrives, part boundaries may fall anywhere across
reads, attachments past a threshold are spooled to a temporary file and SHA-1 hashed and counted on
the way in, so memory does not grow with document size. The root part is the one named by the
``start`` parameter (with or without angle brackets) or the first part; other parts may come in any
order and are found by Content-ID (with or without angle brackets, URL-encoded or not).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from urllib.parse import unquote

from lxml import etree

from xds.soap.envelope import SOAP12_CONTENT_TYPE, Attachment, SoapFault, SoapRequest, parse_envelope

NS_XOP = "http://www.w3.org/2004/08/xop/include"
XOP_INCLUDE = "{" + NS_XOP + "}Include"
MAX_HEADER_BYTES = 16 * 1024
_DIRECT_BYTES = 8 * 1024  # a piece of a part at least this large skips the parser's buffer
# Parts in one message: a provide-and-register carries one per document. Each part costs a few
# hundred bytes even when empty, so without a bound 43 MB of empty parts held 1.25 GB.
MAX_PARTS = 10_000
_IDENTITY_ENCODINGS = frozenset({"binary", "8bit", "7bit"})


# one parameter: its name and its value, quoted or not (linear: no two ways to match a character)
_PARAM = re.compile(r'\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def content_type_params(content_type: str) -> tuple[str, dict[str, str]]:
    """The media type (lower case) and its parameters (names lower case, quoted values unquoted).

    RFC 2045 §5.1, read as leniently as mail readers do: unquoted values may hold any character but
    ``;`` (SOAP stacks send ``action=urn:...`` unquoted), a parameter without ``=`` is skipped, the
    last of a repeated parameter wins, and a type that is not ``type/subtype`` reads as
    ``text/plain`` (§5.2).
    """
    media, _, rest = content_type.partition(";")
    media = media.strip().lower()
    main, slash, sub = media.partition("/")
    if not slash or not main.strip() or not sub.strip() or "/" in sub:
        media = "text/plain"
    params: dict[str, str] = {}
    at, end = 0, len(rest)
    while at < end:
        found = _PARAM.match(rest, at)
        if found is not None:  # (a parameter without "name=" is skipped)
            value = found.group(2)
            if value.startswith('"'):
                value = value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
                value = value.replace("\\\\", "\\").replace('\\"', '"')
            else:
                value = value.strip()
            params[found.group(1).lower()] = value
        # on to the next parameter (anything after a quoted value up to the next ';' is ignored)
        semi = rest.find(";", at if found is None else found.end())
        at = end if semi < 0 else semi + 1
    return media, params


def normalize_cid(value: str) -> str:
    value = value.strip()
    if value.lower().startswith("cid:"):
        value = unquote(value[4:])
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value.strip()


class _Part:
    def __init__(
        self, headers: dict[str, str], spool_threshold: int, tmp_dir: str | None, digest: bool = True
    ) -> None:
        encoding = headers.get("content-transfer-encoding", "binary").strip().lower()
        if encoding not in _IDENTITY_ENCODINGS:
            # XOP parts carry their octets as they are (XOP 1.0 §3); a base64 or quoted-printable
            # part would be stored, hashed and counted as its encoded text
            raise SoapFault(
                "Sender", f"Content-Transfer-Encoding {encoding[:40]!r} is not accepted in a part"
            )
        self.headers = headers
        self.content_id = normalize_cid(headers.get("content-id", ""))
        self.content_type = headers.get("content-type", "application/octet-stream")
        self._threshold = spool_threshold
        self._tmp_dir = tmp_dir
        self._buf = bytearray()
        self._file: object | None = None
        self._path: str | None = None
        self._sha1 = hashlib.sha1() if digest else None
        self.size = 0
        self.unstored: OSError | None = None

    def write(self, data: bytes | memoryview) -> None:
        if not data:
            return
        if self._sha1 is not None:
            self._sha1.update(data)
        self.size += len(data)
        if self.unstored is not None:
            return  # the rest of a part that could not be spooled is read and dropped
        try:
            if self._file is not None:
                self._file.write(data)  # type: ignore[attr-defined]
                return
            self._buf += data
            if len(self._buf) > self._threshold:
                fd, self._path = tempfile.mkstemp(prefix="xds-mtom-", dir=self._tmp_dir)
                self._file = os.fdopen(fd, "wb")
                self._file.write(self._buf)  # type: ignore[attr-defined]
                self._buf = bytearray()
        except OSError as exc:  # no space (or quota) for the spool: the request is read to its end
            # (a new exception: the caught one's traceback holds the caller's view of its buffer)
            self.unstored = OSError(exc.errno, exc.strerror)
            self.discard()
            self._buf = bytearray()

    def finish(self) -> Attachment:
        if self._file is not None and self.unstored is None:
            try:
                self._file.close()  # type: ignore[attr-defined]
            except OSError as exc:  # the last buffered bytes found no space
                self.unstored = OSError(exc.errno, exc.strerror)
                self.discard()
        if self.unstored is not None:
            return Attachment(self.content_id, self.content_type, data=b"", size=0)
        if self._file is not None:
            return Attachment(
                self.content_id,
                self.content_type,
                path=self._path,
                size=self.size,
                sha1=self._sha1.hexdigest() if self._sha1 is not None else "",
            )
        return Attachment(
            self.content_id,
            self.content_type,
            data=bytes(self._buf),
            size=self.size,
            sha1=self._sha1.hexdigest() if self._sha1 is not None else "",
        )

    def discard(self) -> None:
        if self._file is not None:
            try:
                self._file.close()  # type: ignore[attr-defined]
            except OSError:
                pass  # its buffered bytes found no space: the file goes anyway
            self._file = None
        if self._path:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass


class PipedPart(_Part):
    """A part whose bytes are queued for a reader as they arrive (a relay passing them on) until
    :meth:`spill` stores it like any other part; ``stored`` is then what :meth:`finish` made of it."""

    def __init__(self, headers: dict[str, str], spool_threshold: int, tmp_dir: str | None) -> None:
        super().__init__(headers, spool_threshold, tmp_dir, digest=False)
        self.queue: deque[bytes] = deque()
        self.queued = 0  # bytes in the queue
        self.piping = True
        self.done = False
        self.stored: Attachment | None = None

    def write(self, data: bytes | memoryview) -> None:
        if not self.piping:
            super().write(data)
        elif data:
            self.size += len(data)
            self.queued += len(data)
            self.queue.append(bytes(data))

    def take(self) -> bytes:
        """Everything queued, at once."""
        data = self.queue[0] if len(self.queue) == 1 else b"".join(self.queue)
        self.queue.clear()
        self.queued = 0
        return data

    def spill(self) -> None:
        """Store what is queued and what is still to come (nobody is reading it as it arrives)."""
        if not self.piping:
            return
        self.piping = False
        queued, self.queue = self.queue, deque()
        self.size = self.queued = 0
        for chunk in queued:
            super().write(chunk)
        if self.done:
            self.stored = super().finish()

    def finish(self) -> Attachment:
        self.done = True
        if self.piping:  # its bytes went (or go) to the reader: nothing of it is kept here
            return Attachment(self.content_id, self.content_type, size=self.size)
        self.stored = super().finish()
        return self.stored


class MultipartParser:
    """Incremental ``multipart/related`` parser (RFC 2046 §5.1, RFC 2387)."""

    def __init__(
        self,
        content_type: str,
        *,
        spool_threshold: int = 1024 * 1024,
        tmp_dir: str | None = None,
        digest: bool = True,
        max_parts: int = 0,
        max_root_bytes: int = 0,
        pipe: bool = False,
    ) -> None:
        """``digest``: SHA-1 each part while it streams (a repository needs it; a reader may not).

        ``pipe``: every part but the root is a :class:`PipedPart` (in :attr:`piped` by Content-ID),
        its bytes queued for a reader as they arrive: a relay hands them on without storing them.

        ``max_parts`` (0: :data:`MAX_PARTS`) bounds the number of parts, and ``max_root_bytes`` (0:
        no bound) the root part (the SOAP envelope), checked as the bytes stream in, so that
        neither millions of empty parts nor a gigabyte envelope are held before being refused.
        """
        media, params = content_type_params(content_type)
        if not media.startswith("multipart/"):
            raise SoapFault("Sender", f"expected a multipart message, got {media}")
        boundary = params.get("boundary")
        if not boundary:
            raise SoapFault("Sender", "multipart Content-Type without a boundary parameter")
        self.start = normalize_cid(params["start"]) if params.get("start") else None
        self.type = params.get("type", "")
        self._delim = b"\r\n--" + boundary.encode("latin-1")
        self._first = b"--" + boundary.encode("latin-1")
        self._buf = bytearray()
        self._state = "preamble"
        self._part: _Part | None = None
        self._threshold = spool_threshold
        self._tmp_dir = tmp_dir
        self._digest = digest
        self._max_parts = max_parts or MAX_PARTS
        self._max_root = max_root_bytes
        self._pipe = pipe
        self.piped: dict[str, PipedPart] = {}
        self.parts: list[Attachment] = []
        self.unstored: OSError | None = None  # why a part could not be spooled (a full disk)
        self._lost: set[int] = set()  # indices of such parts

    def feed(self, data: bytes) -> None:
        if self._state == "body" and len(data) >= _DIRECT_BYTES and len(self._buf) < len(self._delim):
            data = self._body_direct(data)
        self._buf += data
        while True:
            if self._state == "preamble":
                idx = self._find_first()
                if idx < 0:
                    if len(self._buf) > MAX_HEADER_BYTES:
                        raise SoapFault("Sender", "multipart body does not start with its boundary")
                    return
                del self._buf[: idx + len(self._first)]
                self._state = "after-boundary"
            elif self._state == "after-boundary":
                if len(self._buf) < 2:
                    return
                if self._buf[:2] == b"--":
                    self._state = "done"
                    self._buf.clear()
                    return
                end = self._buf.find(b"\r\n")
                if end < 0:
                    if len(self._buf) > 1024:
                        raise SoapFault("Sender", "malformed multipart boundary line")
                    return
                del self._buf[: end + 2]  # transport padding after the boundary
                self._state = "headers"
            elif self._state == "headers":
                if len(self.parts) >= self._max_parts:
                    raise SoapFault("Sender", f"the multipart message has more than {self._max_parts} parts")
                if self._buf.startswith(b"\r\n"):  # a part with no headers at all
                    del self._buf[:2]
                    self._part = self._new_part({})
                    self._state = "body"
                    continue
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > MAX_HEADER_BYTES:
                        raise SoapFault("Sender", "multipart part headers are too long")
                    return
                headers = _parse_headers(bytes(self._buf[:end]))
                del self._buf[: end + 4]
                self._part = self._new_part(headers)
                self._state = "body"
            elif self._state == "body":
                assert self._part is not None
                idx = self._buf.find(self._delim)
                if idx < 0:
                    keep = len(self._delim) - 1
                    if len(self._buf) > keep:
                        cut = len(self._buf) - keep
                        with memoryview(self._buf) as view:
                            self._part.write(view[:cut])
                        del self._buf[:cut]
                        self._check_root_size()
                    return
                with memoryview(self._buf) as view:
                    self._part.write(view[:idx])
                del self._buf[: idx + len(self._delim)]
                self._check_root_size()
                self.parts.append(self._part.finish())
                if self._part.unstored is not None:
                    self._lost.add(len(self.parts) - 1)
                    self.unstored = self.unstored or self._part.unstored
                self._part = None
                self._state = "after-boundary"
            else:  # done: ignore the epilogue
                self._buf.clear()
                return

    def _body_direct(self, data: bytes) -> bytes:
        """A large piece in the middle of a part goes to the part as it is, without passing through
        the buffer (a relayed document is then handed on without a copy). What is left over — all
        of ``data`` when a delimiter is in it or begins in the buffer, else the few bytes at its end
        that might begin one — is for the buffer."""
        assert self._part is not None
        delim, keep = self._delim, len(self._delim) - 1
        if self._buf and (bytes(self._buf) + data[:keep]).find(delim) >= 0:
            return data
        if data.find(delim) >= 0:
            return data
        # a delimiter that may begin in the last bytes begins with its CR; without one there,
        # nothing of data is held back
        cr = data.rfind(b"\r", len(data) - keep)
        cut = len(data) if cr < 0 else cr
        if self._buf:
            self._part.write(bytes(self._buf))
            self._buf.clear()
        self._part.write(data if cut == len(data) else memoryview(data)[:cut])
        self._check_root_size()
        return data[cut:]

    def _new_part(self, headers: dict[str, str]) -> _Part:
        part = _Part(headers, self._threshold, self._tmp_dir, self._digest)
        if not self._pipe or self._is_root(part):
            return part
        if part.content_id in self.piped:
            named = f"Content-ID <{part.content_id}>" if part.content_id else "no Content-ID"
            raise SoapFault("Sender", f"two parts of the multipart message have {named}")
        piped = self.piped[part.content_id] = PipedPart(headers, self._threshold, self._tmp_dir)
        return piped

    def _is_root(self, part: _Part) -> bool:
        return part.content_id == self.start if self.start else not self.parts

    def root(self) -> bytes | None:
        """The root part's bytes as soon as it has been read whole (other parts may still come)."""
        for i, p in enumerate(self.parts):
            if (p.content_id == self.start if self.start else i == 0) and i not in self._lost:
                return p.read()
        return None

    @property
    def done(self) -> bool:
        """The closing boundary has been read."""
        return self._state == "done"

    def _check_root_size(self) -> None:
        part = self._part
        if not self._max_root or part is None or part.size <= self._max_root:
            return
        if self._is_root(part):
            raise SoapFault("Sender", f"the SOAP envelope is larger than the limit of {self._max_root} bytes")

    def _find_first(self) -> int:
        if self._buf.startswith(self._first):
            return 0
        idx = self._buf.find(self._delim)
        return idx + 2 if idx >= 0 else -1

    def close(self) -> tuple[bytes, dict[str, Attachment]]:
        """The root part's bytes and the other parts by Content-ID; SoapFault if incomplete."""
        if self._state != "done":
            self.discard()
            raise SoapFault("Sender", "the multipart message is truncated (no closing boundary)")
        if not self.parts:
            raise SoapFault("Sender", "the multipart message has no parts")
        root_index = 0
        if self.start:
            matches = [i for i, p in enumerate(self.parts) if p.content_id == self.start]
            if not matches:
                self.discard()
                raise SoapFault("Sender", f"the multipart start part <{self.start}> is missing")
            root_index = matches[0]
        root = self.parts[root_index]
        if root_index in self._lost:
            self.discard()  # the envelope itself found no space to be spooled
            raise SoapFault("Receiver", "the server has no space to receive this message")
        attachments: dict[str, Attachment] = {}
        for i, p in enumerate(self.parts):
            if i == root_index:
                continue
            if p.content_id in attachments:
                # one of them would be dropped unseen (and its spooled file left behind)
                self.discard()
                named = f"Content-ID <{p.content_id}>" if p.content_id else "no Content-ID"
                raise SoapFault("Sender", f"two parts of the multipart message have {named}")
            attachments[p.content_id] = p
        data = root.read()
        root.discard()
        return data, attachments

    def discard(self) -> None:
        if self._part is not None:
            self._part.discard()
        for p in self.parts:
            p.discard()
        for piped in self.piped.values():
            piped.discard()


def _parse_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise SoapFault("Sender", f"malformed multipart header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def parse_multipart_bytes(content_type: str, data: bytes) -> tuple[bytes, dict[str, Attachment]]:
    parser = MultipartParser(content_type, spool_threshold=1 << 62)
    parser.feed(data)
    return parser.close()


# -------------------------------------------------------------------------------------------------
# xop:Include
# -------------------------------------------------------------------------------------------------
def resolve_xop(element: etree._Element, attachments: dict[str, Attachment]) -> Attachment | None:
    """The attachment an element refers to through an xop:Include child, or None if it has none."""
    include = element.find(XOP_INCLUDE)
    if include is None:
        return None
    cid = normalize_cid(include.get("href", ""))
    found = attachments.get(cid)
    if found is None:
        raise SoapFault("Sender", f"xop:Include refers to cid:{cid}, which is not a part of the message")
    return found


def inline_or_xop_bytes(
    element: etree._Element, attachments: dict[str, Attachment], content_id: str = ""
) -> Attachment:
    """The content of an element: an xop:Include'd part, or its inline base64 text."""
    found = resolve_xop(element, attachments)
    if found is not None:
        return found
    import base64
    import binascii

    try:
        data = base64.b64decode("".join((element.text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise SoapFault("Sender", "inline document content is not valid base64") from None
    return Attachment.from_bytes(content_id, "application/octet-stream", data)


# -------------------------------------------------------------------------------------------------
# writing
# -------------------------------------------------------------------------------------------------
def new_boundary() -> str:
    return f"MIMEBoundary_{uuid.uuid4().hex}"


def multipart_content_type(boundary: str, root_id: str, action: str | None = None) -> str:
    ct = (
        f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; '
        f'start="<{root_id}>"; start-info="{SOAP12_CONTENT_TYPE}"'
    )
    if action:
        ct += f'; action="{action}"'
    return ct


def _root_part_head(boundary: str, root_id: str) -> bytes:
    return (
        f"--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; "
        f'type="{SOAP12_CONTENT_TYPE}"\r\n'
        f"Content-Transfer-Encoding: binary\r\nContent-ID: <{root_id}>\r\n\r\n"
    ).encode()


def _attachment_head(boundary: str, att: Attachment) -> bytes:
    return (
        f"\r\n--{boundary}\r\nContent-Type: {att.content_type}\r\n"
        f"Content-Transfer-Encoding: binary\r\nContent-ID: <{att.content_id}>\r\n\r\n"
    ).encode()


def build_mtom_request(
    action: str,
    body: bytes,
    attachments: Iterable[tuple[str, str, bytes]],
    *,
    to: str | None = None,
    secure: Callable[[bytes], bytes] | None = None,
) -> tuple[bytes, str]:
    """An MTOM request: the envelope (whose payload has xop:Includes) plus the attachment parts;
    ``secure`` may rewrite the envelope first (e.g. add a WS-Security header)."""
    from xds.soap.envelope import envelope_bytes

    boundary = new_boundary()
    root_id = f"root.message@{uuid.uuid4().hex}"
    env = envelope_bytes(action, body, to=to, reply_to_anonymous=True)
    if secure is not None:
        env = secure(env)
    out = [_root_part_head(boundary, root_id), env]
    for cid, ctype, data in attachments:
        out.append(_attachment_head(boundary, Attachment(cid, ctype)))
        out.append(data)
    out.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(out), multipart_content_type(boundary, root_id, action)


async def stream_mtom(
    envelope: bytes, attachments: list[Attachment], boundary: str, root_id: str, action: str
) -> AsyncIterator[bytes]:
    """The parts of an MTOM answer, attachments read from disk in chunks."""
    yield _root_part_head(boundary, root_id) + envelope
    for att in attachments:
        if att.stream is not None:  # relayed as it arrives
            yield _attachment_head(boundary, att)
            async for chunk in att.stream:
                yield chunk
            continue
        yield _attachment_head(boundary, att)
        if att.data is not None:
            yield att.data
            continue
        with att.open() as fh:
            while chunk := fh.read(1024 * 1024):
                yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


def parse_message(content_type: str, data: bytes) -> SoapRequest:
    """Parse a SOAP message (plain or MTOM) as a client reads an answer; faults raise SoapFault."""
    if content_type.lower().startswith("multipart/"):
        root, attachments = parse_multipart_bytes(content_type, data)
        return parse_envelope(root, attachments, mtom=True)
    return parse_envelope(data)
