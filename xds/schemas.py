"""The shipped WSDLs and schemas, and how they are served so a client needs no other host.

The files live in the data package ``xds.wsdl`` (the ``wsdl/`` folder): this deployment's own
``registry.wsdl`` and ``repository.wsdl`` and, under ``ihe-iti/``, the official, unmodified IHE
XDS.b, OASIS ebRS/ebRIM 3.0 and W3C ``xml.xsd`` files they import. Served, every
``schemaLocation`` that names a shipped schema is rewritten to ``<endpoint>?xsd=<file name>``
(WSDL 1.1 §2.2 / XML Schema 1.0 §4.2.3 leave locations to the publisher), and a WSDL's
``{{ADDRESS}}`` becomes the endpoint, so a WSDL fetched from the server resolves wholly against it.
"""

from __future__ import annotations

import functools
import re
from importlib.resources import files
from pathlib import Path, PurePosixPath
from xml.sax.saxutils import escape

from xds import safexml

NS_XSD = "http://www.w3.org/2001/XMLSchema"
_LOCATION = re.compile(r'(schemaLocation\s*=\s*")([^"]*)(")')


def wsdl_dir() -> Path:
    """The folder of the installed ``xds.wsdl`` data package."""
    return Path(str(files("xds.wsdl")))


def standards_dir() -> Path:
    """The shipped official schema pack (``ihe-iti/``: ``iti/schema/ebRS``, ``iti/schema/IHE``, ``w3``)."""
    return wsdl_dir() / "ihe-iti"


@functools.cache
def schema_files() -> dict[str, Path]:
    """Every shipped schema by its file name (the names are unique), as ``?xsd=NAME`` serves them."""
    found: dict[str, Path] = {}
    for path in sorted(standards_dir().rglob("*.xsd")):
        if path.name in found:
            raise RuntimeError(f"two shipped schemas named {path.name}")
        found[path.name] = path
    return found


@functools.cache
def _template(path: Path) -> tuple[str, frozenset[str]]:
    """A file's text and the schemaLocation values its import/include elements really carry."""
    text = path.read_bytes().decode("utf-8")  # byte for byte (CRLF line ends kept)
    root = safexml.parse(path.read_bytes())
    locations = {
        el.get("schemaLocation", "")
        for el in root.iter(f"{{{NS_XSD}}}import", f"{{{NS_XSD}}}include")
        if isinstance(el.tag, str)
    }
    return text, frozenset(locations - {""})


def served(path: Path, endpoint: str) -> bytes:
    """``path`` as served at ``endpoint``: shipped schema locations point back at the endpoint."""
    text, locations = _template(path)
    address = escape(endpoint, {'"': "&quot;"})
    known = schema_files()

    def relocate(match: re.Match[str]) -> str:
        location = match.group(2)
        name = PurePosixPath(location).name
        if location not in locations or name not in known:
            return match.group(0)
        return f"{match.group(1)}{address}?xsd={name}{match.group(3)}"

    return _LOCATION.sub(relocate, text).replace("{{ADDRESS}}", address).encode("utf-8")


def served_schema(name: str, endpoint: str) -> bytes | None:
    """The shipped schema called ``name`` as served at ``endpoint``; None for any other name."""
    path = schema_files().get(name)
    return None if path is None else served(path, endpoint)


def served_wsdl(name: str, endpoint: str) -> bytes | None:
    """This deployment's WSDL ``name`` (``registry.wsdl``, ``repository.wsdl``) as served at ``endpoint``."""
    path = wsdl_dir() / name
    return served(path, endpoint) if path.is_file() else None
