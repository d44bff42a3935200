"""Named queries: the SQL of each store lives in `shared/sql/queries/<name>.sql`."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from types import MappingProxyType

from echo.paths import project_path

_QUERY_NAME_RE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@functools.cache
def load_queries(name: str) -> Mapping[str, str]:
    """The named queries of `shared/sql/queries/<name>.sql`, each after a `-- name: x` line.

    SQL stays in .sql files that a reviewer (or psql) can read; Python refers to
    a query by its name. Read once per process: two stores of one table (the lease
    rules and the lease keeper) share the same mapping, which nobody can change.
    """
    text = (project_path("shared") / "sql" / "queries" / f"{name}.sql").read_text()
    parts = _QUERY_NAME_RE.split(text)
    return MappingProxyType(
        {parts[i]: parts[i + 1].strip().rstrip(";") for i in range(1, len(parts), 2)})
