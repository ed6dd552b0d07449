"""The configuration: file, environment and the JSON the worker processes get (xds/config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds.config import DEFAULT_TOML, Config, load


def test_every_kind_of_setting_keeps_its_type_through_file_environment_and_workers(tmp_path: Path) -> None:
    """Workers (``--workers N``) get the configuration as JSON: a number must arrive as a number
    (a time limit read as the text "10.0" made every stored query fail)."""
    path = tmp_path / "xds.toml"
    path.write_text(DEFAULT_TOML)
    cfg = load(path, environ={"XDS_REGISTRY_QUERY_TIME_LIMIT_S": "2.5", "XDS_SERVER_READ_TIMEOUT_S": "30"})
    assert cfg.registry.query_time_limit_s == 2.5 and cfg.server.read_timeout_s == 30
    again = Config.from_dict(cfg.to_dict())
    assert again.registry.query_time_limit_s == 2.5 and isinstance(again.registry.query_time_limit_s, float)
    assert again.server.max_connections == 1000 and again.server.database_threads is False
    with pytest.raises(ValueError, match="must be a number"):
        load(path, environ={"XDS_REGISTRY_QUERY_TIME_LIMIT_S": "soon"})
