"""The ``xds`` command as a person meets it: one line (never a traceback) and a non-zero exit when
a server cannot be reached; stdout only for what was stored; defaults in every help text."""

from __future__ import annotations

import argparse
import io
import random
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import REPO, RunningServer, free_port

from xds import samples
from xds.cli import build_parser, main
from xds.console import PROGRESS_FROM, TerminalProgress


@pytest.fixture
def document(tmp_path: Path) -> Path:
    path = tmp_path / "epikrise.txt"
    path.write_text("Epikrise: pasienten ble utskrevet i god form.\n")
    return path


def patient() -> str:
    return samples.person_number(random.Random(7))


def test_submit_with_no_server_says_so_in_one_line(
    document: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}/repository"
    assert main(["submit", str(document), "--patient", patient(), "--url", url]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == [f"xds: {url}: cannot connect: Connection refused"]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
    for conn in held:
        conn.close()


def test_retrieve_from_a_server_that_never_answers_times_out_in_one_line(
    silent_server: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{silent_server}/repository"
    argv = ["retrieve", "1.2.3", "--repository", "1.2.3.4", "-o", str(tmp_path / "x"), "--url", url]
    assert main([*argv, "--timeout", "0.3"]) == 3
    out, err = capsys.readouterr()
    assert out == "" and err.strip().splitlines() == [f"xds: {url}: no answer in time (timed out)"]
    assert not (tmp_path / "x").exists()


def test_https_to_a_plain_http_server_is_a_tls_failure_in_one_line(
    server: RunningServer, document: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.url.replace("http://", "https://") + "/repository"
    assert main(["submit", str(document), "--patient", patient(), "--url", url]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.strip().splitlines()
    assert line.startswith(f"xds: {url}: TLS failed: ") and "Traceback" not in err


def test_submit_prints_the_repository_and_each_stored_document(
    server: RunningServer, document: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = tmp_path / "notat.txt"
    second.write_text("Notat\n")
    url = f"{server.url}/repository"
    assert main(["submit", str(document), str(second), "--patient", patient(), "--url", url]) == 0
    out, err = capsys.readouterr()
    repo = server.app.state.repositories["default"]
    lines = [line.split("\t") for line in out.splitlines()]
    assert lines[0] == ["repositoryUniqueId", repo.unique_id]
    assert [line[1:] for line in lines[1:]] == [[str(document), "text/plain"], [str(second), "text/plain"]]
    assert err.strip() == "xds: Success"
    # what it printed is what retrieve needs
    unique_id = lines[1][0]
    target = tmp_path / "back.txt"
    argv = ["retrieve", unique_id, "--repository", repo.unique_id, "-o", str(target), "--url", url]
    assert main(argv) == 0
    assert target.read_bytes() == document.read_bytes()


def test_a_refused_submit_prints_nothing_on_stdout(
    server: RunningServer, document: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = "123456^^^&1.2.3.4.5&ISO"  # not a national number, never fed: the registry refuses it
    assert main(["submit", str(document), "--patient", unknown, "--url", f"{server.url}/repository"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "XDSUnknownPatientId" in err and err.strip().endswith("xds: Failure")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("xds ")


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_every_option_with_a_default_shows_it_in_its_help() -> None:
    checked = 0
    for parser in _parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.default in (None, False, "", argparse.SUPPRESS) or not action.option_strings:
                continue
            checked += 1
            shown = formatter._expand_help(action)
            assert f"(default: {action.default})" in shown or "(default" in (action.help or ""), (
                parser.prog,
                action.option_strings,
            )
    assert checked > 20


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_on_a_terminal_only_for_transfers_over_10_mib() -> None:
    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = TerminalProgress("sent", stream, interval=0)
        progress(PROGRESS_FROM // 2, PROGRESS_FROM * 3)
        progress(PROGRESS_FROM * 3, PROGRESS_FROM * 3)
        progress.close()
    assert "sent 5.0 of 30.0 MiB (16%)" in terminal.getvalue() and terminal.getvalue().endswith("\n")
    assert pipe.getvalue() == ""
    small = Terminal()
    progress = TerminalProgress("sent", small, interval=0)
    progress(1000, 2000)
    progress.close()
    assert small.getvalue() == ""


def test_dev_without_a_command_prints_its_usage() -> None:
    done = subprocess.run([str(REPO / "dev")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.startswith("usage: ./dev COMMAND")
    assert "set -euo" not in done.stdout + done.stderr
