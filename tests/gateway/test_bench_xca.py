"""``xds bench xca`` end to end at a small size: every figure is printed next to its target."""

from __future__ import annotations

import re

import pytest
from support import run_bench


def test_bench_xca_small(capsys: pytest.CaptureFixture[str]) -> None:
    rc = run_bench("xca", "--communities", "2", "--rounds", "2", "--doc-mb", "1")
    out = capsys.readouterr().out
    assert rc == 0, out
    assert len(re.findall(r"fan-out to 2 .*ratio to the slowest [\d.]+ +\(target <= 1.20", out)) == 3, out
    assert re.search(r"retrieve: through both gateways \d+ ms, direct ITI-43 \d+ ms .*target >= 50%", out), (
        out
    )
