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
    String,
    Table,
    Text,
)

metadata = MetaData()

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
