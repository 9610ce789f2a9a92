"""The registry server's spec store: one SQL table, through SQLAlchemy.

Every spec lives in the table ``pcs_specs`` as (section, identifier, body as
canonical JSON text, created and updated times), unique per (section,
identifier). The same code runs on SQLite (the default, one file) and on
PostgreSQL for a team::

    store = SpecStore("postgresql://postgres@127.0.0.1:5432/registry")
    store.put("components", "agent==1.0", {"class_name": "Agent"})
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Literal

from sqlalchemy import DateTime, String, Text, UniqueConstraint, create_engine, make_url, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from pcs.errors import RegistryConflictError, RegistryError, RegistryServerError
from pcs.specs import canonical_json

__all__ = ["SpecStore", "SpecRow", "PutResult", "MAX_IDENTIFIER_LENGTH"]

MAX_IDENTIFIER_LENGTH = 1024

PutResult = Literal["created", "updated", "unchanged"]


class _Base(DeclarativeBase):
    pass


class SpecRow(_Base):
    """One stored spec."""

    __tablename__ = "pcs_specs"
    __table_args__ = (UniqueConstraint("section", "identifier", name="uq_pcs_specs_section_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    section: Mapped[str] = mapped_column(String(32), index=True)
    identifier: Mapped[str] = mapped_column(String(MAX_IDENTIFIER_LENGTH))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SpecStore:
    """Specs in a SQL database; creates its table on first use."""

    def __init__(self, db_url: str) -> None:
        try:
            self._engine = create_engine(_with_available_driver(make_url(db_url)))
        except (SQLAlchemyError, ValueError) as exc:
            raise RegistryError(
                f"Cannot use the database URL {db_url!r}: {exc}. Give a SQLAlchemy URL "
                "such as sqlite:///registry.db or postgresql://user@host:5432/dbname."
            ) from None
        except ImportError as exc:
            raise RegistryError(
                f"Cannot use the database URL {db_url!r}: its driver is not installed "
                f"({exc}). Install it (for PostgreSQL: pip install psycopg2-binary), or "
                "name an installed one in the URL (postgresql+psycopg2://...)."
            ) from None
        self.display_url = self._engine.url.render_as_string(hide_password=True)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        with self._errors("create the registry table"):
            _Base.metadata.create_all(self._engine)

    def get(self, section: str, identifier: str) -> dict[str, Any] | None:
        """The body stored under (section, identifier), or None."""
        with self._errors("read a spec"), self._sessions() as session:
            row = self._row(session, section, identifier)
            return None if row is None else json.loads(row.body)

    def identifiers(self, section: str) -> list[str]:
        """Every identifier of a section, sorted."""
        with self._errors("list specs"), self._sessions() as session:
            query = (
                select(SpecRow.identifier)
                .where(SpecRow.section == section)
                .order_by(SpecRow.identifier)
            )
            return list(session.scalars(query))

    def put(self, section: str, identifier: str, body: dict[str, Any], force: bool) -> PutResult:
        """Store ``body``; an equal body is a no-op, a different one needs ``force``.

        Raises:
            RegistryConflictError: a different body is stored and ``force`` is false.
            ArgumentError: the body holds values JSON cannot record (NaN, inf).
        """
        text = canonical_json(body)
        # a concurrent insert of the same key makes ours fail; the second pass
        # then finds that row and compares against it
        for _ in range(2):
            with self._errors("store a spec"), self._sessions() as session:
                row = self._row(session, section, identifier)
                now = datetime.now(timezone.utc)
                if row is None:
                    session.add(
                        SpecRow(section=section, identifier=identifier, body=text,
                                created_at=now, updated_at=now)
                    )
                    try:
                        session.commit()
                    except IntegrityError:
                        session.rollback()
                        continue
                    return "created"
                if json.loads(row.body) == json.loads(text):
                    return "unchanged"
                if not force:
                    raise RegistryConflictError(
                        f"The registry already holds a different {section} spec "
                        f"{identifier!r}, so it was not replaced. Send the request with "
                        "?force=true to overwrite it, or use another identifier."
                    )
                row.body = text
                row.updated_at = now
                session.commit()
                return "updated"
        raise RegistryServerError(  # pragma: no cover - needs a row deleted mid-request
            f"Could not store {section} spec {identifier!r}: it changed while being "
            "written. Send the request again."
        )

    def close(self) -> None:
        self._engine.dispose()

    @staticmethod
    def _row(session: Session, section: str, identifier: str) -> SpecRow | None:
        query = select(SpecRow).where(
            SpecRow.section == section, SpecRow.identifier == identifier
        )
        return session.scalars(query).first()

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn database failures into a RegistryServerError that names the database."""
        try:
            yield
        except SQLAlchemyError as exc:
            raise RegistryServerError(
                f"The registry could not {action}: its database {self.display_url} "
                f"failed ({type(exc).__name__}: {str(exc).splitlines()[0]}). Check that "
                "the database is running and reachable, then retry."
            ) from None


def _with_available_driver(url: URL) -> URL:
    """``postgresql://`` with the PostgreSQL driver that is installed.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, 2.0 as
    psycopg2; take whichever of the two is present, so the same URL works.
    """
    if url.drivername != "postgresql":
        return url
    for module, driver in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return url.set(drivername=driver)
    return url
