"""``xds bench trust``: the cost of verifying one signed request, next to one RSA-2048 verification.

A request as a municipal journal sends it — an ITI-18 query with a signed XUA assertion and the
institution's WS-Security signature — is verified (assertion signature and chain, conditions,
message signature over Body, Timestamp and WS-Addressing headers) many times; the floor is one
RSA-2048 PKCS#1 v1.5 / SHA-256 signature verification with ``cryptography``, measured in the same
run. Target: at most 2 ms per request.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from xds import safexml, samples
from xds.metadata import vocabulary as v


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("trust", help="cost of verifying one signed request vs. one RSA-2048 verification")
    p.add_argument("--requests", type=int, default=500, help="verifications to time")


def bench(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    from xds.soap.envelope import build_request
    from xds.trust import assertion as xa
    from xds.trust.keys import TrustAnchors, init_keys
    from xds.trust.wssecurity import TrustRoles, secure_request, verify_request

    with tempfile.TemporaryDirectory(prefix="xds-bench-trust-") as tmp:
        keys = init_keys(tmp, ["kommune"])
        patient = samples.patient_cx("13116900216")
        attrs = xa.TrustAttributes(
            subject_id="Kari Nordmann", hpr_number="9144900", organisation_id="983971636", resource_id=patient
        )
        assertion = xa.sign_assertion(
            xa.build_assertion(attrs, issuer="https://idp"), keys.idp.key_pem(), keys.idp.cert_pem()
        )
        body = (
            f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
            f'<query:ResponseOption returnType="LeafClass"/><rim:AdhocQuery id="{v.SQ_FIND_DOCUMENTS}"/>'
            f"</query:AdhocQueryRequest>"
        ).encode()
        envelope, _ = build_request(v.ACTION_STORED_QUERY, body, to="http://127.0.0.1/registry")
        sender = keys.institutions["kommune"]
        data = secure_request(
            envelope, assertion=assertion, key_pem=sender.key_pem(), cert_pem=sender.cert_pem()
        )

        trust = TrustRoles(TrustAnchors([str(keys.ca.cert_path)]), {"https://idp": [keys.idp.certificate()]})
        times = []
        for _ in range(args.requests):
            t0 = time.perf_counter()
            verify_request(safexml.parse(data), trust=trust)
            times.append(time.perf_counter() - t0)

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        message = b"x" * 1024
        signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        public = key.public_key()
        floor = []
        for _ in range(args.requests * 4):
            t0 = time.perf_counter()
            public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            floor.append(time.perf_counter() - t0)
    ours, base = statistics.median(times) * 1e3, statistics.median(floor) * 1e3
    verdict = "meets" if ours <= 2.0 else "ABOVE"
    print(f"xds bench trust: {args.requests} signed ITI-18 requests ({len(data):,} bytes each)")
    print(
        f"verify request: p50 {ours:.3f} ms  (target <= 2 ms: {verdict})  |  one RSA-2048 verification "
        f"{base:.3f} ms  |  ratio {ours / base:.1f}x"
    )
    return 0
