"""The training console: rank 0's events become one line per epoch on the driver."""

import io
import queue
import re

import pytest

from artdate.core.console import TrainingConsole, duration


def epoch_event(epoch: int, mae: float) -> dict:
    return {
        "event": "epoch",
        "epoch": epoch,
        "train_loss": 2.5,
        "val_mae": mae,
        "range_level": 0.8,
        "val_range_width": 150.0,
        "images_per_second": 37.1,
    }


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_one_line_per_epoch_with_the_time_left_and_a_resume_said_once():
    events: queue.Queue = queue.Queue()
    out = Terminal()
    # A run resumed after epoch 2 of 5: epochs 3..5 run in this attempt.
    events.put({"event": "resume", "epoch": 2, "step": 0, "steps": 10, "path": "/runs/r/checkpoint_1"})
    with TrainingConsole(events, epochs=5, progress=True, stream=out):
        for epoch in (2, 3, 4):
            events.put({"event": "start", "epoch": epoch, "steps": 15})
            for step in (5, 10, 15):
                events.put({"event": "step", "step": step, "loss": 2.4, "images_per_second": 18.0})
            events.put(epoch_event(epoch, 40.0 - epoch))
    lines = [part for line in out.getvalue().splitlines() for part in line.split("\r") if part.strip()]
    said = [line for line in lines if not line.startswith("epoch") or ": loss" in line]
    assert said[0] == "resuming after epoch 2 from /runs/r/checkpoint_1"
    assert [line.split(":")[0] for line in said[1:]] == ["epoch 3/5", "epoch 4/5", "epoch 5/5"]
    assert said[1].startswith("epoch 3/5: loss 2.5000, val MAE 38.0 y, 80% ranges 150 y wide, 37.1 img/s, ")
    assert re.search(r", \d+s left$", said[1]) and re.search(r", \d+s left$", said[2])
    assert "left" not in said[3]  # the last epoch has nothing left
    assert any(re.search(r"epoch 3/5: +\d+%.*\| 5/15 \[", line) for line in lines)  # the epoch's bar, in steps


@pytest.mark.parametrize("progress, out", [(False, Terminal()), (True, io.StringIO())], ids=["quiet", "not-a-terminal"])
def test_only_the_lines_when_quiet_or_not_on_a_terminal(progress, out):
    events: queue.Queue = queue.Queue()
    with TrainingConsole(events, epochs=1, progress=progress, stream=out):
        events.put({"event": "start", "epoch": 0, "steps": 3})
        events.put({"event": "step", "step": 3, "loss": 2.4, "images_per_second": 18.0})
        events.put(epoch_event(0, 30.1))
    assert out.getvalue() == "epoch 1/1: loss 2.5000, val MAE 30.1 y, 80% ranges 150 y wide, 37.1 img/s\n"


def test_durations_read_as_a_person_writes_them():
    assert [duration(s) for s in (45, 185, 7440)] == ["45s", "3m 05s", "2h 04m"]


def test_a_checkpoint_inside_an_epoch_and_a_resume_there_are_said():
    events: queue.Queue = queue.Queue()
    out = io.StringIO()
    events.put({"event": "resume", "epoch": 1, "step": 6, "steps": 10, "path": "/runs/r/checkpoint_3"})
    with TrainingConsole(events, epochs=3, progress=False, stream=out):
        events.put({"event": "start", "epoch": 1, "steps": 10, "step": 6})
        events.put({"event": "checkpoint", "epoch": 1, "step": 8, "steps": 10, "reason": "preemption"})
        events.put({"event": "checkpoint", "epoch": 1, "step": 10, "steps": 10, "reason": "interval"})
    assert out.getvalue().splitlines() == [
        "resuming in epoch 2 after step 6 from /runs/r/checkpoint_3",
        "checkpoint in epoch 2 at step 8/10 (a preemption notice)",
        "checkpoint in epoch 2 at step 10/10 (--checkpoint-every)",
    ]
