"""The registry's storage schema (SQLAlchemy 2 Core), built for the ITI-18 stored queries.

Every stored-query parameter has an indexed column or, when it is multi-valued, a side table; each
registry object also keeps its canonical ebRIM 3.0 fragment so that query answers are assembled from
stored bytes instead of being serialised again (ITI TF-2 §3.18.4.1.3).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

metadata = MetaData()

# documentAvailability (ITI TF-3 §4.2.3.2.28) of an entry registered without one
ONLINE = "urn:ihe:iti:2010:DocumentAvailability:Online"

# --- patient identity (ITI-8 Patient Identity Feed; ITI TF-2 §3.8) ----------------------------------
# One row per known patient identifier (a CX with ISO assigning authority, e.g. "123^^^&1.2.3&ISO").
# ``merged_into`` is set when an A40 merge subsumed this id; resolution follows it to the survivor.
patients = Table(
    "patients",
    metadata,
    Column("pid", String(256), primary_key=True),
    Column("merged_into", String(256), nullable=True),
    Column("family_name", String(200), nullable=True),
    Column("given_name", String(200), nullable=True),
    Column("birth_date", String(16), nullable=True),
    Column("sex", String(8), nullable=True),
    Column("updated", String(20), nullable=False),
)
Index("ix_patients_merged_into", patients.c.merged_into)

# --- document entries (ITI TF-3 §4.2.3.2) -----------------------------------------------------------
# Coded attributes are stored as "code^^scheme", the form stored-query parameters use.
documents = Table(
    "documents",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(128), nullable=False, unique=True),
    Column("lid", String(128), nullable=False),
    Column("unique_id", String(160), nullable=False),
    Column("patient_id", String(256), nullable=False),
    Column("status", String(64), nullable=False),
    Column("object_type", String(64), nullable=False),
    Column("class_code", String(256)),
    Column("type_code", String(256)),
    Column("format_code", String(256)),
    Column("practice_setting_code", String(256)),
    Column("facility_type_code", String(256)),
    Column("creation_time", String(14)),
    Column("service_start_time", String(14)),
    Column("service_stop_time", String(14)),
    Column("hash", String(40)),
    Column("size", BigInteger),
    Column("repository_unique_id", String(128)),
    Column("mime_type", String(128)),
    Column("home", String(128)),
    Column("xml", LargeBinary, nullable=False),
    # Metadata Update (ITI TF-3 §4.1.x, ITI TF-2 §3.57): version n of the logical entry ``lid``,
    # ``latest`` 1 on its newest version only; documentAvailability (Online unless updated)
    Column("version", Integer, nullable=False, server_default="1"),
    Column("latest", SmallInteger, nullable=False, server_default="1"),
    Column("availability", String(64), nullable=False, server_default=ONLINE),
)
Index("ix_documents_patient_status", documents.c.patient_id, documents.c.status)
Index("ix_documents_unique_id", documents.c.unique_id)
# one version n per logical entry: of two updates racing to make version n + 1, one is refused
Index("ux_documents_lid_version", documents.c.lid, documents.c.version, unique=True)

# A DocumentEntry uniqueId maps to one hash forever: a resubmission with the same hash is a new
# entry, a different hash is XDSNonIdenticalHash. The primary key makes that check race-free.
document_hashes = Table(
    "document_hashes",
    metadata,
    Column("unique_id", String(160), primary_key=True),
    Column("hash", String(40), nullable=True),
)

# Multi-valued query parameters of documents: eventCodeList, confidentialityCode, authorPerson,
# referenceIdList — one row per value.
document_codes = Table(
    "document_codes",
    metadata,
    Column("doc_seq", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # "event" | "conf" | "author" | "refid"
    Column("value", String(512), nullable=False),
)
Index("ix_document_codes_value", document_codes.c.kind, document_codes.c.value, document_codes.c.doc_seq)
# per document: the filters ask "has this document a row of this kind with this value?"
Index("ix_document_codes_doc_kind", document_codes.c.doc_seq, document_codes.c.kind, document_codes.c.value)

# --- submission sets (ITI TF-3 §4.2.3.3) --------------------------------------------------------------
submission_sets = Table(
    "submission_sets",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(128), nullable=False, unique=True),
    Column("unique_id", String(160), nullable=False, unique=True),
    Column("patient_id", String(256), nullable=False),
    Column("status", String(64), nullable=False),
    Column("source_id", String(128)),
    Column("submission_time", String(14)),
    Column("content_type_code", String(256)),
    Column("home", String(128)),
    Column("xml", LargeBinary, nullable=False),
)
Index("ix_submission_sets_patient", submission_sets.c.patient_id, submission_sets.c.submission_time)

submission_set_authors = Table(
    "submission_set_authors",
    metadata,
    Column("ss_seq", Integer, nullable=False),
    Column("author_person", String(512), nullable=False),
)
Index("ix_ss_authors", submission_set_authors.c.author_person, submission_set_authors.c.ss_seq)

# --- folders (ITI TF-3 §4.2.3.4) ------------------------------------------------------------------------
folders = Table(
    "folders",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(128), nullable=False, unique=True),
    Column("lid", String(128), nullable=False),
    Column("unique_id", String(160), nullable=False),
    Column("patient_id", String(256), nullable=False),
    Column("status", String(64), nullable=False),
    Column("last_update_time", String(14)),
    Column("home", String(128)),
    Column("xml", LargeBinary, nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("latest", SmallInteger, nullable=False, server_default="1"),
)
Index("ix_folders_patient", folders.c.patient_id, folders.c.last_update_time)
# the versions of one folder share its uniqueId; another folder may not take it (version 1 clashes)
Index("ux_folders_unique_id_version", folders.c.unique_id, folders.c.version, unique=True)
Index("ux_folders_lid_version", folders.c.lid, folders.c.version, unique=True)

folder_codes = Table(
    "folder_codes",
    metadata,
    Column("folder_seq", Integer, nullable=False),
    Column("value", String(256), nullable=False),
)
Index("ix_folder_codes", folder_codes.c.value, folder_codes.c.folder_seq)

# --- associations (ITI TF-3 §4.2.2) -----------------------------------------------------------------------
associations = Table(
    "associations",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(128), nullable=False, unique=True),
    Column("type", String(128), nullable=False),
    Column("source", String(128), nullable=False),
    Column("target", String(128), nullable=False),
    Column("status", String(64), nullable=False),
    Column("xml", LargeBinary, nullable=False),
)
Index("ix_associations_source", associations.c.source, associations.c.type)
Index("ix_associations_target", associations.c.target, associations.c.type)

# Objects whose kind a query must know from a UUID alone (GetAssociations, GetFoldersForDocument ...).
registry_objects = Table(
    "registry_objects",
    metadata,
    Column("uuid", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),  # "document" | "submissionset" | "folder" | "association"
)

# Extra metadata and classifications that apply to stored objects but stand alone (kept verbatim).
registry_info = Table(
    "registry_info",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# The institution (organisation number) that submitted each object: updates and removals are
# allowed to it alone (xds.trust.policy, ``requires_owner``).
object_submitters = Table(
    "object_submitters",
    metadata,
    Column("uuid", String(128), primary_key=True),
    Column("organisation", String(64), nullable=False),
)
