"""ATNA audit trail (ITI TF-1 §9, ITI TF-2a §3.20 Record Audit Event, DICOM PS3.15 Annex A.5).

- :mod:`message` — the DICOM audit message (its XML, validated against the schema in ``schema/``).
- :mod:`transactions` — EventID / EventActionCode / EventTypeCode of every audited transaction.
- :mod:`events` — one audit message per transaction, built from what was exchanged and the
  verified requester (:mod:`requester`), on the responding and the requesting side.
- :mod:`journal` — the on-disk queue every event is appended to before delivery.
- :mod:`trail` — delivery to the sinks (a database, syslog), each at its own pace.
- :mod:`syslog` — RFC 5424 messages over UDP (RFC 5426) and TLS (RFC 5425).
- :mod:`fhir` — FHIR AuditEvent JSON (IHE BALP) for export.

The library owns no storage: sinks are small protocols the application hands in.
"""
