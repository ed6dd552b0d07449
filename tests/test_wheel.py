"""The built wheel on its own: installed (not editable) in a fresh virtual environment, ``xds serve``
from it describes itself wholly: zeep loads both WSDLs and every schema they import from the server,
with any fetch elsewhere refused, and calls every operation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from support import REPO, free_port, postgres_admin_url, zeep_every_operation

SKIP = shutil.ignore_patterns(
    ".venv", ".git", "data", "build", "dist", "*.egg-info", "__pycache__", ".*cache"
)


def run(*argv: str | Path, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done.stdout


def wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "xds serve exited"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("xds serve did not start within 60 s")


@pytest.mark.skipif(postgres_admin_url() is not None, reason="the package is checked in the SQLite pass")
def test_the_installed_wheel_serves_both_wsdls_to_a_client_with_no_route_out(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=SKIP)
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "-w",
        tmp_path / "dist",
        source,
        cwd=tmp_path,
    )
    shutil.rmtree(source)  # nothing beside the installed package to fall back on
    [wheel] = (tmp_path / "dist").glob("*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel, cwd=tmp_path)
    where = run(
        venv / "bin" / "python", "-c", "from xds.schemas import wsdl_dir; print(wsdl_dir())", cwd=tmp_path
    )
    assert Path(where.strip()).is_relative_to(venv), where

    port = free_port()
    env = {k: val for k, val in os.environ.items() if not k.startswith(("XDS_", "PYTHON"))}
    command = [str(venv / "bin" / "xds"), "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    log = (tmp_path / "serve.log").open("wb")  # a file, not a pipe nobody reads: the request log fills it
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, process)
        operations, fetched = zeep_every_operation(url)
        assert len(operations) == 8 and f"{url}/repository/default?wsdl" in fetched
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    assert "outcome=success" in (tmp_path / "serve.log").read_text()  # the installed server logs requests
