"""The suite's xdist groups reach pytest-xdist's scheduler.

conftest.py keeps tests that share an expensive fixture (the session Ray, servers,
PostgreSQL) on one worker by marking them with ``xdist_group``; ``--dist loadgroup``
then adds the group to each test's id and sends a group to one worker. A pytest
that stores ids where pytest-xdist cannot add the group (9.2 with xdist 3.8) makes
every group silently spread over both workers, starting each shared fixture twice.
"""

from __future__ import annotations

import os

import pytest


def _dist_mode(config: pytest.Config) -> str:
    """The ``--dist`` mode the controller was given (a worker's own option says ``no``)."""
    args = [*config.getini("addopts"), *getattr(config, "workerinput", {}).get("mainargv", [])]
    mode = "no"
    for i, arg in enumerate(args):
        if arg == "--dist" and i + 1 < len(args):
            mode = args[i + 1]
        elif arg.startswith("--dist="):
            mode = arg.split("=", 1)[1]
    return mode


@pytest.mark.xdist_group("probe")
def test_a_grouped_test_carries_its_group_in_its_id(request):
    if not os.environ.get("PYTEST_XDIST_WORKER") or _dist_mode(request.config) != "loadgroup":
        pytest.skip("runs only under pytest-xdist with --dist loadgroup (the suite's default)")
    assert request.node.nodeid.endswith("@probe"), (
        f"{request.node.nodeid}: pytest-xdist could not add the group to the test's id; "
        "pin a pytest that it supports (setup.cfg, test extra)"
    )
