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
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Literal

from sqlalchemy import DateTime, String, Text, UniqueConstraint, create_engine, make_url, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError, StatementError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from pcs.errors import RegistryConflictError, RegistryError, RegistryServerError
from pcs.specs import canonical_json

__all__ = ["SpecStore", "SpecRow", "PutResult", "MAX_IDENTIFIER_LENGTH", "check_identifier"]

MAX_IDENTIFIER_LENGTH = 1024
# control characters (NUL above all: PostgreSQL text cannot hold it) and lone
# surrogates (not encodable as UTF-8) can be neither stored nor shown safely
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")

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
        shown = _hide_password(db_url)
        try:
            # pre-ping: a restarted PostgreSQL must not fail the first request after it
            self._engine = create_engine(
                _with_available_driver(make_url(db_url)), pool_pre_ping=True
            )
        except (SQLAlchemyError, ValueError) as exc:
            raise RegistryError(
                f"Cannot use the database URL {shown!r}: "
                f"{_hide_password(str(exc)).replace(db_url, shown)}. Give a SQLAlchemy URL "
                "such as sqlite:///registry.db or postgresql://user@host:5432/dbname."
            ) from None
        except ImportError as exc:
            raise RegistryError(
                f"Cannot use the database URL {shown!r}: its driver is not installed "
                f"({exc}). Install it (for PostgreSQL: pip install psycopg2-binary), or "
                "name an installed one in the URL (postgresql+psycopg2://...)."
            ) from None
        self.display_url = self._engine.url.render_as_string(hide_password=True)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        with self._errors("create the registry table"):
            _Base.metadata.create_all(self._engine)

    def get(self, section: str, identifier: str) -> dict[str, Any] | None:
        """The body stored under (section, identifier), or None."""
        text = self.get_json(section, identifier)
        return None if text is None else json.loads(text)

    def get_json(self, section: str, identifier: str) -> str | None:
        """The body stored under (section, identifier) as its canonical JSON text, or None."""
        identifier = check_identifier(identifier)
        with self._errors("read a spec"), self._sessions() as session:
            row = self._row(session, section, identifier)
            return None if row is None else row.body

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
            RegistryError: the identifier is empty, too long, holds control characters
                or confusable characters.
        """
        identifier = check_identifier(identifier)
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
        """Close the database connections this store holds."""
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
        except (StatementError, ValueError) as exc:
            # the driver refused a value before sending it (e.g. NUL for PostgreSQL);
            # SQLAlchemy passes that on bare or wrapped, depending on where it happens
            refusal = exc.orig if isinstance(exc, StatementError) else exc
            # psycopg 3 refuses NUL with its own DataError, not a ValueError
            if not isinstance(refusal, ValueError) and not isinstance(exc, DataError):
                raise self._failed(action, exc) from None  # type: ignore[arg-type]
            raise RegistryError(
                f"The registry could not {action}: its database {self.display_url} cannot "
                f"hold a value of this request ({refusal}). Remove NUL bytes and other "
                "control characters from identifiers and spec bodies."
            ) from None
        except SQLAlchemyError as exc:
            raise self._failed(action, exc) from None

    def _failed(self, action: str, exc: SQLAlchemyError) -> RegistryServerError:
        return RegistryServerError(
            f"The registry could not {action}: its database {self.display_url} "
            f"failed ({type(exc).__name__}: {str(exc).splitlines()[0]}). Check that "
            "the database is running and reachable, then retry."
        )


def check_identifier(identifier: str) -> str:
    """``identifier`` in the form the store keys it by (Unicode NFC), or RegistryError.

    Identifiers that look the same are the same: ``café`` typed as one
    character or as ``e`` plus a combining accent is one spec (NFC). Forms made
    to look like another identifier are refused: compatibility characters
    (fullwidth ``Ａgent``, ligatures, superscripts: whatever NFKC would change)
    and letters of several scripts in one identifier (a Cyrillic ``а`` among
    Latin letters); Chinese, Japanese and Korean characters count as one script.

    Raises:
        RegistryError: it is empty, longer than :data:`MAX_IDENTIFIER_LENGTH`
            characters, holds a control character or a lone surrogate, or a
            confusable character.
    """
    if not identifier or len(identifier) > MAX_IDENTIFIER_LENGTH:
        raise RegistryError(
            f"A spec identifier must be 1 to {MAX_IDENTIFIER_LENGTH} characters long; got "
            f"{len(identifier)}. Use a shorter identifier."
        )
    bad = _UNSTORABLE.search(identifier)
    if bad:
        raise RegistryError(
            f"The spec identifier {identifier[:100]!r} holds the character "
            f"{bad.group()!r} at position {bad.start()}; identifiers may not hold NUL "
            "bytes, other control characters or unpaired surrogates. Rename the spec."
        )
    identifier = unicodedata.normalize("NFC", identifier)
    if identifier.isascii():
        return identifier
    for index, char in enumerate(identifier):
        compatible = unicodedata.normalize("NFKC", char)
        if compatible != char:
            name = unicodedata.name(char, f"U+{ord(char):04X}")
            raise RegistryError(
                f"The spec identifier {identifier[:100]!r} holds {char!r} "
                f"({name}) at position {index}, a "
                f"look-alike of {compatible!r}; pcs refuses identifiers that can pass for "
                f"another. Write {compatible!r} instead."
            )
    scripts: dict[str, str] = {}
    for char in identifier:
        if unicodedata.category(char).startswith("L"):
            script = _script(char)
            scripts.setdefault(script, char)
    if len(scripts) > 1:
        shown = ", ".join(f"{name.title()} ({char!r})" for name, char in sorted(scripts.items()))
        raise RegistryError(
            f"The spec identifier {identifier[:100]!r} mixes letters of several scripts "
            f"({shown}), so it can pass for another identifier; pcs refuses it. Write it in "
            "one script."
        )
    return identifier


_CJK = frozenset({"CJK", "HIRAGANA", "KATAKANA", "HANGUL", "HALFWIDTH", "IDEOGRAPHIC"})


def _script(char: str) -> str:
    """The script of a letter, from its Unicode name (``LATIN SMALL LETTER A`` -> LATIN)."""
    first = unicodedata.name(char, "UNKNOWN").split(" ", 1)[0]
    return "CJK" if first in _CJK else first


def _hide_password(text: str) -> str:
    """``text`` with the password of any ``scheme://user:password@`` in it masked."""
    return re.sub(r"(://[^/@:\s]*:)[^/\s]*@", r"\1***@", text)


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
