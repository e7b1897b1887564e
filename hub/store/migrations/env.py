"""Alembic environment: runs migrations on the connection the Store (or `etp db`) hands in."""

from alembic import context

from hub.store.models import StoreModel

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "hub.store migrations run only through hub.store.migrate (Store.start or `etp db "
        "upgrade`), which passes an open connection in config.attributes['connection']"
    )

context.configure(
    connection=connection,
    target_metadata=StoreModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
