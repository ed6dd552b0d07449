"""The one place XML parsers are made: no entities, no DTDs, no network, bounded size and depth.

Every parser in the project comes from here, so hostile input (billion laughs, external entities,
XXE fetches) is refused the same way everywhere.
"""

from __future__ import annotations

import threading

from lxml import etree

# libxml2 itself refuses nesting deeper than 256 levels unless huge_tree is set; it stays unset.


class XmlRejected(ValueError):
    """The bytes are not acceptable XML (malformed, DTD present, nested too deep)."""


class _NothingOutside(etree.Resolver):
    """Answers every request to load something from outside the document with nothing.

    With ``load_dtd=False`` libxml2 still opens a DOCTYPE's external subset (and a parameter
    entity's SYSTEM file) to look for entity declarations. Opening ``/proc/self/fd/N`` of one of
    the server's own pipes blocks the event loop for good, and whether the open succeeded shows
    in the error, telling a client which files exist. Every such load is handed to this resolver
    first, and it gives back an empty text; the DOCTYPE is then refused after the parse.
    """

    def resolve(self, system_url: str, public_id: str, context: object) -> object:
        return self.resolve_string("", context)


def _make_parser() -> etree.XMLParser:
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )
    parser.resolvers.add(_NothingOutside())
    return parser


_local = threading.local()


def parser() -> etree.XMLParser:
    """This thread's safe parser (lxml parsers must not be shared between threads)."""
    p = getattr(_local, "parser", None)
    if p is None:
        p = _local.parser = _make_parser()
    return p


# Markup ('<') in one document. A parsed element costs a few hundred bytes, so a body of 63 MB of
# "<h/>" grew the process by 2.2 GB; a submission of 2,000 documents has about 300,000.
MAX_MARKUP = 1_000_000


def parse(data: bytes) -> etree._Element:
    """Parse ``data`` into an element; refuse DOCTYPEs, entities, excessive nesting and more
    than :data:`MAX_MARKUP` tags."""
    if data.count(b"<") > MAX_MARKUP:
        raise XmlRejected(f"more than {MAX_MARKUP} tags")
    try:
        root = etree.fromstring(data, parser())
    except etree.XMLSyntaxError as exc:
        raise XmlRejected(f"malformed XML: {exc}") from None
    if root is None:
        raise XmlRejected("empty XML document")
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise XmlRejected("DOCTYPE declarations are not accepted")
    return root
