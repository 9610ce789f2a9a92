"""AgentOS's ``pcs.exceptions`` names, as aliases of pcs's errors.

Code written for AgentOS catches ``pcs.exceptions.RegistryException``; here it
is :class:`pcs.errors.RegistryError`, so the same ``except`` clause catches
what pcs's registries raise (conflicts, missing specs, unreadable files).
New code should use :mod:`pcs.errors`.
"""

from __future__ import annotations

from pcs.errors import RegistryError

__all__ = ["RegistryException"]

RegistryException = RegistryError
