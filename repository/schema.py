"""The Document Repository's table: which stored blob holds each document (ITI TF-2 §3.41.4.1.3).

Bytes live in the content-addressed blob store; this table maps a document's uniqueId, per
repository, to its blob (SHA-1), size and mimeType. ``state`` is ``pending`` from the moment the
bytes are stored until the registry has accepted the registration, then ``stored``; recovery after
a crash settles pending rows against the registry.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, Text

metadata = MetaData()

repository_documents = Table(
    "repository_documents",
    metadata,
    Column("repository_id", String(128), primary_key=True),
    Column("unique_id", String(160), primary_key=True),
    Column("sha1", String(40), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mime_type", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("created", String(20), nullable=False),
    # what the access policy decides on (xds.trust.policy): the document as it was provided
    Column("patient_id", String(256), nullable=True),
    Column("class_code", String(256), nullable=True),
    Column("confidentiality", Text, nullable=True),  # "code^^scheme" values, one per line
    Column("submitter", String(64), nullable=True),  # organisation number of who provided it
)
Index("ix_repository_documents_sha1", repository_documents.c.sha1)
Index("ix_repository_documents_state", repository_documents.c.state)
