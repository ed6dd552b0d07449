"""Alembic environment for the deployment's schema (run through ``xds.database.migrate``).

Migrations are written by hand (no autogenerate), so the environment needs no table metadata and
this plumbing package imports no actor.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached when someone runs the alembic CLI
    raise RuntimeError("run migrations through xds.database.migrate()")

context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
