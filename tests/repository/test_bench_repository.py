"""``xds bench provide`` and ``xds bench retrieve`` end to end, small (no 1 GB document here)."""

from __future__ import annotations

import re

import pytest
from support import run_bench


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        (
            "provide",
            r"provide: ([\d,]+) documents/s  floor ([\d,]+) documents/s  ratio [\d.]+%  \(target >= 40%: (meets|BELOW)\)"
            r"\n  \(rounds: provide [\d,]+-[\d,]+, floor [\d,]+-[\d,]+ documents/s\)",
        ),
        (
            "retrieve",
            r"retrieve: ([\d,]+) documents/s  floor ([\d,]+) documents/s  ratio [\d.]+%  \(target >= 50%: (meets|BELOW)\)",
        ),
    ],
)
def test_bench_documents_per_second_next_to_the_floor(
    name: str, pattern: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = run_bench(name, "--requests", "30", "--workers", "1", "--concurrency", "4", "--big-mb", "0")
    out = capsys.readouterr().out
    assert rc == 0, out  # every document stored / retrieved, every floor request answered
    found = re.search(pattern, out)
    assert found, out
    assert all(int(g.replace(",", "")) > 0 for g in found.groups()[:2])
