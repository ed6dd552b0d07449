"""The MTOM part a signature covers is the part the message hands on (W3C XOP 1.0 §3, WS-Security's
XOP infoset): an ``xop:Include`` href is read one way by the signature check and by every reader of
the message (:func:`xds.soap.mtom.normalize_cid`). Two readings let a message carry a signed part
and another one that is stored or relayed in its place under the same href."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree

from xds.soap.envelope import Attachment
from xds.soap.mtom import resolve_xop
from xds.trust import xmldsig

XOP = xmldsig.NS_XOP
WSU = xmldsig.NS_WSU


@pytest.mark.parametrize(
    ("href", "ids"),
    [
        ("doc%40example.no", ("doc@example.no", "doc%40example.no")),  # no cid: scheme
        ("cid:&lt;&lt;doc@example.no&gt;&gt;", ("doc@example.no", "<doc@example.no>")),
        ("cid:doc%40example.no", ("doc@example.no", "doc%40example.no")),  # the standard spelling
    ],
)
def test_the_signed_part_is_the_part_handed_on(href: str, ids: tuple[str, str]) -> None:
    document = etree.fromstring(
        f'<Envelope xmlns:wsu="{WSU}"><Document wsu:Id="doc">'
        f'<xop:Include xmlns:xop="{XOP}" href="{href}"/></Document></Envelope>'
    )
    parts = {cid: Attachment.from_bytes(cid, "text/plain", f"part {cid}".encode()) for cid in ids}
    key = ec.generate_private_key(ec.SECP256R1())
    signature = xmldsig.sign([document[0]], key, etree.Element(f"{{{xmldsig.NS_DS}}}KeyInfo"), parts=parts)
    document.append(signature)
    assert xmldsig.verify(signature, key.public_key(), parts=parts) == [document[0]]
    handed_on = resolve_xop(document[0], parts)
    assert handed_on is not None
    forged = {
        **parts,
        handed_on.content_id: Attachment.from_bytes(handed_on.content_id, "text/plain", b"forged"),
    }
    with pytest.raises(xmldsig.SignatureInvalid, match="does not match"):
        xmldsig.verify(signature, key.public_key(), parts=forged)
