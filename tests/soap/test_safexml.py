"""The one XML parser: nothing outside the bytes it is given is ever opened (hostile input)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from xds import safexml

_EXTERNAL = [
    '<!DOCTYPE r SYSTEM "file://{path}"><r/>',
    '<!DOCTYPE r PUBLIC "-//x//y//EN" "file://{path}"><r/>',
    '<!DOCTYPE r [<!ENTITY % pe SYSTEM "file://{path}"> %pe;]><r/>',
    '<!DOCTYPE r [<!ENTITY e SYSTEM "file://{path}">]><r>&e;</r>',
    '<?xml version="1.0"?>\n<!DOCTYPE r SYSTEM "{path}"><r/>',
]


@pytest.mark.parametrize("template", _EXTERNAL)
def test_a_doctype_is_refused_without_opening_what_it_names(tmp_path: Path, template: str) -> None:
    """A named pipe nobody writes to: opening it would block the parser (and with it a server's
    event loop) for good. A DOCTYPE is refused, and what it names is never opened — so the
    answer does not tell either whether a file exists."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def parse() -> None:
        try:
            safexml.parse(template.format(path=fifo).encode())
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    th = threading.Thread(target=parse, daemon=True)
    th.start()
    th.join(5)
    if th.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let the blocked reader go
        th.join(5)
        pytest.fail("the parser opened the file a DOCTYPE names")
    assert isinstance(outcome[0], safexml.XmlRejected), outcome
    assert "pipe" not in str(outcome[0])


def test_missing_and_existing_files_named_by_a_doctype_are_refused_alike(tmp_path: Path) -> None:
    there = tmp_path / "there.dtd"
    there.write_text("<!ELEMENT r EMPTY>")
    answers = []
    for path in (there, tmp_path / "missing.dtd"):
        with pytest.raises(safexml.XmlRejected) as exc:
            safexml.parse(f'<!DOCTYPE r SYSTEM "file://{path}"><r/>'.encode())
        answers.append(str(exc.value))
    assert answers[0] == answers[1]


def test_documents_of_too_many_tags_are_refused_before_parsing() -> None:
    """Each element costs far more memory than its bytes: many empty ones would grow the process
    by tens of times the body's size."""
    with pytest.raises(safexml.XmlRejected, match="tags"):
        safexml.parse(b"<r>" + b"<h/>" * safexml.MAX_MARKUP + b"</r>")
    assert len(safexml.parse(b"<r>" + b"<h/>" * 1000 + b"</r>")) == 1000
