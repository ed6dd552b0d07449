"""Keys for the trust tests, made at test time (never stored in the repository)."""

from __future__ import annotations

import pytest

from xds.trust.keys import KeySet, init_keys


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    """Our development CA, identity provider and two institutions."""
    return init_keys(tmp_path_factory.mktemp("keys"), ["ahus", "kommune"])


@pytest.fixture(scope="session")
def rogue(tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    """Somebody else's CA and an institution under it: trusted by nobody here."""
    return init_keys(tmp_path_factory.mktemp("rogue"), ["rogue"], ca_name="Not our CA")
