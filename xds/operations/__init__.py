"""Running the service: readiness checks, Prometheus metrics, backup and restore."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess(data_dir: str | Path) -> None:
    """Before any worker starts (and before prometheus_client is imported): every process writes
    its metric samples under ``<data_dir>/metrics``, emptied of an earlier run's."""
    directory = Path(data_dir) / "metrics"
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[ENV] = str(directory.resolve())
