"""Versioned SQL migrations for the catalog, applied in order and recorded.

Files are ``migrations/NNNN_name.sql``. Each is applied in its own transaction and
recorded in ``schema_migrations`` with its checksum; applying again is a no-op, and
a recorded migration whose file changed is an error. A PostgreSQL advisory lock keeps
two processes from migrating at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import psycopg

from movierec.errors import DataError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_LOCK_KEY = 0x6D6F7669  # "movi"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        number, _, name = path.stem.partition("_")
        found.append(Migration(int(number), name, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise DataError(f"duplicate migration numbers in {directory}")
    return found


async def migrate(conn: psycopg.AsyncConnection, directory: Path = MIGRATIONS) -> list[int]:
    """Apply pending migrations; return the versions applied now."""
    await conn.set_autocommit(True)
    await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
            "name text NOT NULL, checksum text NOT NULL, applied_at timestamptz DEFAULT now())")
        cursor = await conn.execute("SELECT version, checksum FROM schema_migrations")
        done = dict(await cursor.fetchall())
        applied = []
        for migration in discover(directory):
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise DataError(f"migration {migration.version} changed after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute("INSERT INTO schema_migrations (version, name, checksum) "
                                   "VALUES (%s, %s, %s)",
                                   (migration.version, migration.name, migration.checksum))
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
