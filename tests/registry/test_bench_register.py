"""``xds bench register`` end to end, small: a real server, the floor and the registry alternated."""

from __future__ import annotations

import re

import pytest
from support import run_bench


def test_bench_register_prints_medians_next_to_the_floor(capsys: pytest.CaptureFixture[str]) -> None:
    rc = run_bench(
        "register",
        "--sqlite-only",
        "--requests",
        "40",
        "--rounds",
        "2",
        "--workers",
        "1",
        "--concurrency",
        "4",
    )
    assert rc == 0  # no failed registration, no failed floor request
    out = capsys.readouterr().out
    line = re.search(
        r"register sqlite: ([\d,]+) registrations/s  floor ([\d,]+) req/s  ratio ([\d.]+)%  "
        r"\(target >= 50%: (meets|BELOW)\)  \(rounds: registry [\d,]+-[\d,]+, floor [\d,]+-[\d,]+\)",
        out,
    )
    assert line, out
    ours, floor = (int(g.replace(",", "")) for g in line.groups()[:2])
    assert ours > 0 and floor > 0
