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


def test_a_used_postgresql_bench_database_is_emptied_for_the_next_run(database_url: str) -> None:
    """Each run starts from an empty database: every table, the audit tables' append-only guard and
    the migration history go, and the schema is made again without a clash."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL: runs in the PostgreSQL pass")
    from sqlalchemy import inspect

    from xds.bench.register import _reset_postgres
    from xds.database import migrate, open_engine_nopool

    engine = open_engine_nopool(database_url)
    migrate(engine)
    assert "audit_events" in inspect(engine).get_table_names()
    _reset_postgres(database_url)
    assert inspect(engine).get_table_names() == []
    migrate(engine)  # failed with DuplicateTable / DuplicateFunction before
    engine.dispose()
