"""A community's MTOM answer read as it arrives (ITI TF-2b §3.39.4.2; W3C XOP 1.0, SOAP MTOM).

The initiating gateway reads the root part (the SOAP envelope) of an ITI-39 answer first. Then:

- an answer that must be verified before any of it is used (a signed exchange: the signature in
  the envelope covers the documents, ITI TF-2 §3.40 / WS-Security's XOP infoset) is read whole,
  its documents spooled (:meth:`AnswerReader.read_all`);
- an unsigned answer is relayed: each document part is handed to the consumer's answer as its bytes
  come off the wire (:meth:`AnswerReader.stream`), so the two network legs overlap instead of one
  waiting for the other. A part the answer sends before one that is wanted first is spooled until
  its turn (:class:`xds.soap.mtom.PipedPart`), so memory does not grow with document size.

Either way the answer as a whole may not exceed ``limit`` bytes (``[server] max_body_mb`` +
``max_document_mb``), nor its envelope ``max_root`` bytes; past either the reading stops. Each
:data:`RELAY_CHUNK` bytes of it (or its end) must come within the community's ``timeout_s`` of
waiting for them (the time the relay waits on its consumer does not count): a community trickling
its answer does not hold the relay, its consumer and its connection for ever.
"""

from __future__ import annotations

import asyncio
from typing import BinaryIO

import httpx

from xds.gateway.wire import WireResponse
from xds.soap.envelope import Attachment, SoapFault
from xds.soap.mtom import MultipartParser

_FILE_CHUNK = 1024 * 1024
# bytes of a relayed part passed on at once: fewer, larger writes cost the gateway and the consumer
# less per byte than the ~30 kB pieces the network hands over
RELAY_CHUNK = 256 * 1024


class AnswerTooLarge(Exception):
    """A community's answer exceeds what this gateway takes in."""


class AnswerReader:
    """One community's ``multipart/related`` answer, read from ``response`` as needed."""

    def __init__(
        self,
        response: httpx.Response | WireResponse,
        *,
        limit: int,
        max_root: int,
        spool_dir: str,
        spool_threshold: int,
        relay: bool,
        idle_timeout: float,
        max_parts: int = 0,
    ) -> None:
        """``idle_timeout``: how long the end of the HTTP message is waited for once the last part
        has been passed on, and the waiting allowed for each RELAY_CHUNK bytes of the answer (each
        read is also bounded by the client's own read timeout); ``max_parts``:
        the most parts the answer may have (0: the parser's own bound)."""
        self.response = response
        self._chunks = response.aiter_raw()
        self.parser = MultipartParser(
            response.headers.get("content-type", ""),
            spool_threshold=spool_threshold,
            tmp_dir=spool_dir,
            digest=False,
            max_root_bytes=max_root,
            max_parts=max_parts,
            pipe=relay,
        )
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.total = 0
        # the time this answer may still be waited for before RELAY_CHUNK more bytes arrive (a
        # community trickling a byte within each read's time limit would hold the relay for ever)
        self._patience = idle_timeout
        self._arrived = 0
        self._taken: set[str] = set()  # parts a reader has begun
        self._files: dict[str, BinaryIO] = {}
        self._streams: set[str] = set()  # parts handed out and not yet let go
        self.handed_out: set[str] = set()
        self.closed = False

    async def _pull(self) -> bool:
        """Read one more chunk into the parser; False at the end of the answer."""
        if self.parser.done:
            return False  # (an epilogue is not read)
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            async with asyncio.timeout(self._patience):  # (and each read by the client's timeout)
                chunk = await anext(self._chunks, None)
        except TimeoutError:
            raise TimeoutError(
                f"the answer came slower than {RELAY_CHUNK // 1024} kB in {self.idle_timeout:g} s"
            ) from None
        if chunk is None:
            return False
        self._patience -= loop.time() - began
        self._arrived += len(chunk)
        if self._arrived >= RELAY_CHUNK:
            self._patience, self._arrived = self.idle_timeout, 0
        self.total += len(chunk)
        if self.total > self.limit:
            raise AnswerTooLarge(f"the answer is larger than {self.limit // 2**20} MB")
        self.parser.feed(chunk)
        return True

    async def root(self) -> bytes:
        """The root part (the SOAP envelope), read whole."""
        while (root := self.parser.root()) is None:
            if not await self._pull():
                self.parser.close()  # a truncated or rootless message: its SoapFault
                raise SoapFault("Sender", "the multipart message has no root part")
        return root

    async def read_all(self) -> dict[str, Attachment]:
        """The answer read to its end; its parts (but the root) by Content-ID."""
        while await self._pull():
            pass
        _, attachments = self.parser.close()
        return attachments

    def stream(self, content_id: str) -> PartStream:
        """Part ``content_id``'s bytes as they arrive (an :attr:`Attachment.stream`)."""
        self._streams.add(content_id)
        self.handed_out.add(content_id)
        return PartStream(self, content_id)

    async def next_chunk(self, content_id: str) -> bytes | None:
        """The next bytes of part ``content_id``, None at its end; ValueError when the answer does
        not hold it whole."""
        self._taken.add(content_id)
        while True:
            fh = self._files.get(content_id)
            if fh is not None:
                return fh.read(_FILE_CHUNK) or None
            part = self.parser.piped.get(content_id)
            if part is not None and part.unstored is not None:
                raise ValueError(f"part <{content_id}> could not be spooled: {part.unstored}")
            if part is not None and part.piping:
                if part.done or part.queued >= RELAY_CHUNK:
                    return part.take() or None
            elif part is not None and part.stored is not None:
                self._files[content_id] = part.stored.open()
                continue
            for other_id, other in self.parser.piped.items():
                if other_id != content_id and other_id not in self._taken:
                    other.spill()  # comes before its turn: kept until then
            if not await self._pull():
                raise ValueError(f"the answer ended without (all of) part <{content_id}>")

    async def release(self, content_id: str) -> None:
        """A stream handed out is done with; the answer is let go with the last one."""
        self._streams.discard(content_id)
        fh = self._files.pop(content_id, None)
        if fh is not None:
            fh.close()
        if not self._streams:
            if self.parser.done:  # read the end of the HTTP message, so its connection is kept
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        async for chunk in self._chunks:
                            self.total += len(chunk)
                            if self.total > self.limit:
                                break
                except (TimeoutError, httpx.HTTPError):
                    pass
            await self.aclose()

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fh in self._files.values():
            fh.close()
        self._files.clear()
        self.parser.discard()
        await self.response.aclose()


class PartStream:
    """The bytes of one part of a relayed answer, as an async iterator with ``aclose``."""

    def __init__(self, reader: AnswerReader, content_id: str) -> None:
        self.reader = reader
        self.content_id = content_id

    def __aiter__(self) -> PartStream:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.reader.next_chunk(self.content_id)
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        await self.reader.release(self.content_id)
