"""Postgres: connections, what their errors mean, the schema, the named queries.

One package, four modules along the way a statement goes:

- `pool`: where the DSN comes from, the connection pool (`Database`) and single
  connections (`connect`, `connection`, `direct`);
- `classification`: what a driver error means, transient (`StoreUnavailable`) or
  permanent (`StoreRejected`), by `TRANSIENT_SQLSTATES`;
- `schema`: the numbered migrations in `shared/sql`, applied once each, in order;
- `queries`: the named queries of `shared/sql/queries`.

The rest of ECHO imports from `echo.db`, whose names are these.
"""

from echo.db.classification import DB_BACKOFF, TRANSIENT_SQLSTATES, nul_free, schema_guard
from echo.db.pool import (
    Connection,
    Database,
    Record,
    connect,
    connection,
    describe,
    direct,
    embedded_server,
    embedded_started,
    read_only,
    resolve_dsn,
    set_application_name,
    translate_errors,
)
from echo.db.queries import load_queries
from echo.db.schema import drop_namespace, migrate, migrations, schema_version

__all__ = [
    "DB_BACKOFF",
    "TRANSIENT_SQLSTATES",
    "Connection",
    "Database",
    "Record",
    "connect",
    "connection",
    "describe",
    "direct",
    "drop_namespace",
    "embedded_server",
    "embedded_started",
    "load_queries",
    "migrate",
    "migrations",
    "nul_free",
    "read_only",
    "resolve_dsn",
    "schema_guard",
    "schema_version",
    "set_application_name",
    "translate_errors",
]
