"""The configuration: file, environment and the JSON the worker processes get (xds/config.py)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from xds.cli import main
from xds.config import ARRAYS, TABLES, Config, default_toml, load, settings_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_kind_of_setting_keeps_its_type_through_file_environment_and_workers(tmp_path: Path) -> None:
    """Workers (``--workers N``) get the configuration as JSON: a number must arrive as a number
    (a time limit read as the text "10.0" made every stored query fail)."""
    path = tmp_path / "xds.toml"
    path.write_text(default_toml())
    cfg = load(path, environ={"XDS_REGISTRY_QUERY_TIME_LIMIT_S": "2.5", "XDS_SERVER_READ_TIMEOUT_S": "30"})
    assert cfg.registry.query_time_limit_s == 2.5 and cfg.server.read_timeout_s == 30
    again = Config.from_dict(cfg.to_dict())
    assert again.registry.query_time_limit_s == 2.5 and isinstance(again.registry.query_time_limit_s, float)
    assert again.server.max_connections == 1000 and again.server.database_threads is False
    with pytest.raises(ValueError, match="must be a number"):
        load(path, environ={"XDS_REGISTRY_QUERY_TIME_LIMIT_S": "soon"})


def _settings() -> list[tuple[str, str, type]]:
    """(section header, setting name, dataclass) for every setting the dataclasses define."""
    sections = [(f"[{n}]", type(getattr(Config(), n))) for n in TABLES]
    sections += [(f"[[{n}]]", cls) for n, (_, cls) in ARRAYS.items()]
    return [(header, f.name, cls) for header, cls in sections for f in fields(cls)]


def test_xds_init_writes_every_setting_of_the_dataclasses_at_its_default_with_its_meaning(
    tmp_path: Path,
) -> None:
    path = tmp_path / "xds.toml"
    assert main(["init", str(path)]) == 0
    text = path.read_text()
    assert load(path, environ={}) == Config()  # the written file is the defaults, exactly
    uncommented = re.sub(
        r"(?m)^# (\[\[[\w.]+\]\]|\w+ = .*)$", r"\1", text
    )  # the arrays written commented out
    written = tomllib.loads(uncommented)
    for header, name, cls in _settings():
        section: dict = written
        for part in header.strip("[]").split("."):  # [[trust.issuer]] is an array inside [trust]
            section = section[part]
        values = section[0] if header.startswith("[[") else section
        assert name in values, f"xds init leaves out {header} {name}"
        doc = next(f.metadata["doc"] for f in fields(cls) if f.name == name)
        assert doc and f"# {doc}\n" in text, f"{header} {name} has no meaning written"


def test_the_readme_settings_table_is_the_dataclasses() -> None:
    """Every setting, its default and its meaning appear in the README exactly as the code has them;
    on a change, paste the table this test prints into the README's Settings section."""
    table = settings_table()
    assert len(table.splitlines()) == len(_settings()) + 2
    assert table in README.read_text(), "README settings table differs from xds/config.py:\n" + table


def test_an_unknown_section_or_setting_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"unknown setting \[server\] hots"):
        Config.from_dict({"server": {"hots": "x"}})
    with pytest.raises(ValueError, match="unknown section"):
        Config.from_dict({"srever": {}})
    with pytest.raises(ValueError, match=r"unknown setting \[\[repository\]\] #1 nam"):
        Config.from_dict({"repository": [{"nam": "a"}]})
