"""Fixtures of the conformance-runner tests: the ebRIM 3.0 lcm schema and the kit's 2.1 submissions.

The kit comes from ``$XDS_SHARED_DIR/conformance/nist-testkit`` (tests/support.py): missing, the
tests skip with the reason outside CI and fail in CI; the schemas ship with the project.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xds.metadata import vocabulary as v


@pytest.fixture(scope="session")
def submissions_21(testkit: Path) -> list[Path]:
    """Every ebRIM 2.1 SubmitObjectsRequest in the kit (tests/, testdata*/, utilities/, ...)."""
    marker = v.NS_RS21.encode()
    found = []
    for path in sorted(testkit.rglob("*")):
        if path.is_file() and path.suffix.lower() == ".xml" and marker in path.read_bytes():
            found.append(path)
    return found
