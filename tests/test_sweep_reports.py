"""Ray trials' reports to their sweep: a real TCP server and client on 127.0.0.1."""

from __future__ import annotations

import threading

from pcs.sweep._reports import ReportClient, ReportServer


def test_a_trial_hears_the_sweeps_answers_and_stops_reporting_once_the_sweep_is_gone(caplog):
    heard: list[tuple[int, int, float]] = []

    def answer(index: int, step: int, value: float) -> bool:
        heard.append((index, step, value))
        return step >= 2

    server = ReportServer("127.0.0.1", answer, threading.Lock())
    client = ReportClient(server.address)
    try:
        assert [client(3, step, 0.5) for step in range(3)] == [False, False, True]
        assert heard == [(3, 0, 0.5), (3, 1, 0.5), (3, 2, 0.5)]
    finally:
        server.close()

    assert not server.thread.is_alive()
    assert client(3, 3, 0.5) is False  # the sweep hung up: no prune, and no waiting
    assert client.broken and "cannot reach its sweep" in caplog.text
    assert client(3, 4, 0.5) is False
    assert len(heard) == 3


def test_a_client_without_the_key_is_refused_before_any_report_is_read():
    heard: list[int] = []
    server = ReportServer("127.0.0.1", lambda i, s, v: heard.append(i) or True, threading.Lock())
    try:
        host, port, _ = server.address
        stranger = ReportClient((host, port, b"not the key"))
        assert stranger(1, 0, 1.0) is False
        assert stranger.broken and heard == []
    finally:
        server.close()
