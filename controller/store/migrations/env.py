"""Alembic environment: runs on the connection handed over by controller.store.database.Database.upgrade."""

from alembic import context

from controller.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `cloudx db upgrade`")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
