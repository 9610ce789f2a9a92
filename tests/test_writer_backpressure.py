"""A run logging faster than the store takes points: memory stays bounded, the caller is paced.

``Run.log_metric`` buffers at most ``MAX_PENDING`` points. A call that finds
the buffer full waits until the writer thread has freed room (a batch), not
until the whole buffer is written: before, that one call wrote all 200,000
buffered points itself, a stall of about 20 s on SQLite.
"""

from __future__ import annotations

from mlflow import MlflowClient

from pcs import Run, _writer


def test_a_full_buffer_waits_for_room_not_for_the_whole_buffer(monkeypatch):
    monkeypatch.setattr(_writer, "MAX_PENDING", 5_000)
    total = 15_000
    after_full: list[int] = []
    most = 0
    with Run(run_name="fast logger") as run:
        run.log_metric("loss", 0.0, step=0)
        writer = run._writer
        for step in range(1, total):
            full = writer.pending + 1 >= _writer.MAX_PENDING
            run.log_metric("loss", step * 0.5, step=step)
            most = max(most, writer.pending)
            if full:
                after_full.append(writer.pending)
    assert most <= _writer.MAX_PENDING  # bounded memory
    assert after_full, "the buffer never filled: the test logs too slowly to mean anything"
    # a call that found the buffer full came back once there was room, with the rest still
    # buffered for the thread (the old flush came back with nothing left)
    assert min(after_full) >= _writer.MAX_PENDING // 2, after_full[:20]
    history = MlflowClient().get_metric_history(run.identifier, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (step, step * 0.5) for step in range(total)
    ]
