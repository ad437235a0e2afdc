"""Looking at the database behind the API's back."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.models import Base


async def dump_database(engine: AsyncEngine) -> str:
    """Every row of every table, as text: to prove something is stored nowhere."""
    lines: list[str] = []
    async with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in (await conn.execute(select(table))).all():
                lines.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(lines)
