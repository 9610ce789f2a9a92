"""The pcs registry server: publish and pull specs and run artifacts over HTTP.

Start it with ``pcs-registry serve``; talk to it with
:class:`pcs.web_registry.WebRegistry`. Specs live in a SQL database through
SQLAlchemy (SQLite by default, PostgreSQL for teams), run artifacts in a
folder, one sub-folder per run.
"""

from __future__ import annotations

from registry.app import create_app
from registry.store import SpecStore

__all__ = ["create_app", "SpecStore"]
