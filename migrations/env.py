"""Alembic environment for xcore's core tables.

xcore drives Alembic from code (`xcore.db.migrate`), passing the database URL in `config.attributes["url"]`
so that passwords and `%` signs never go through the ini parser. Logging is xcore's own: no fileConfig here.
"""

from __future__ import annotations

from alembic import context

from xcore.db.engine import make_engine
from xcore.db.models import Base

config = context.config
url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
target_metadata = Base.metadata


def run_offline() -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # Batch mode rebuilds a table as a copy and drops the old one. With foreign keys on, that drop
                # deletes every row pointing at the table (ON DELETE CASCADE): rebuilding `roles` would empty
                # `user_roles`. So they are off while migrating (a no-op inside a transaction, hence before it),
                # and the result is checked instead.
                connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                connection.commit()
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
                render_as_batch=sqlite,
            )
            with context.begin_transaction():
                context.run_migrations()
                if sqlite and (broken := connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()):
                    tables = sorted({row[0] for row in broken})
                    raise RuntimeError(f"the migration left rows pointing at missing rows in {', '.join(tables)}")
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
