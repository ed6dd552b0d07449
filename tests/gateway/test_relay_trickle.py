"""A community that trickles its ITI-39 answer (a byte now and then, each within the per-read time
limit) may not hold the initiating gateway's relay, its consumer and its connection for as long as
it likes: the community must deliver each relayed piece (``relay.RELAY_CHUNK`` bytes, or the rest
of the answer) within its ``timeout_s`` of waiting; past that the relayed answer is broken off and
the community's connection closed. The community is a raw socket server, over real HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway.test_relay import HOME, REPOSITORY, Script, _answer
from support import RunningServer, make_config

from xds.config import CommunityConfig
from xds.metadata import vocabulary as v
from xds.soap.envelope import build_request
from xds.soap.mtom import MultipartParser

DOCUMENT = b"CRP 42 mg/L\n" * 400


class Trickler:
    """Answers the envelope at once, then the rest of the answer a byte every 0.2 s."""

    def __init__(self) -> None:
        self.body, self.ctype = _answer(Script({"1.2.3.1": DOCUMENT}))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.cut_off = threading.Event()  # the gateway closed the connection mid-answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, rest = data.split(b"\r\n\r\n", 1)
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            while len(rest) < length:
                rest += conn.recv(65536)
            quick = len(self.body) - len(DOCUMENT) - 100
            conn.sendall(
                f"HTTP/1.1 200 OK\r\nContent-Type: {self.ctype}\r\nContent-Length: {len(self.body)}\r\n\r\n".encode()
                + self.body[:quick]
            )
            try:
                for i in range(quick, len(self.body)):
                    time.sleep(0.2)
                    conn.sendall(self.body[i : i + 1])
            except OSError:
                self.cut_off.set()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def trickler() -> Iterator[Trickler]:
    community = Trickler()
    try:
        yield community
    finally:
        community.close()


def test_a_trickled_answer_is_broken_off_not_relayed_for_ever(
    trickler: Trickler, tmp_path: Path, database_url: str
) -> None:
    config = make_config(tmp_path / "data", database_url)
    config.communities = [
        CommunityConfig(
            home_community_id=HOME,
            name="Sildrekommune",
            registry_url=f"http://127.0.0.1:{trickler.port}/xca/query",
            repository_url=f"http://127.0.0.1:{trickler.port}/xca/retrieve",
            timeout_s=1.0,
        )
    ]
    body = (
        f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{v.NS_XDSB}"><xdsb:DocumentRequest>'
        f"<xdsb:HomeCommunityId>{HOME}</xdsb:HomeCommunityId><xdsb:RepositoryUniqueId>{REPOSITORY}"
        "</xdsb:RepositoryUniqueId><xdsb:DocumentUniqueId>1.2.3.1</xdsb:DocumentUniqueId>"
        "</xdsb:DocumentRequest></xdsb:RetrieveDocumentSetRequest>"
    )
    with RunningServer(config) as gateway:
        url = f"{gateway.url}/ig/repository"
        data, ctype = build_request(v.ACTION_RETRIEVE, body.encode(), to=url)
        seen: Exception | None = None
        with httpx.stream("POST", url, content=data, headers={"Content-Type": ctype}, timeout=30) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/")
            parser = MultipartParser(r.headers["content-type"])
            try:
                for chunk in r.iter_raw():
                    parser.feed(chunk)
                parser.close()
            except Exception as exc:  # noqa: BLE001 - what the consumer saw
                seen = exc
        # broken off by the gateway (a truncated message), not given up on by the consumer
        assert seen is not None and not isinstance(seen, httpx.TimeoutException), seen
        assert trickler.cut_off.wait(30), "the gateway still holds the community's connection"
        assert not list((Path(config.server.data_dir) / "gateway-spool").iterdir())
        assert httpx.get(f"{gateway.url}/health", timeout=10).text == "ok\n"
