"""What a training run shows on the driver's console: a progress bar per epoch (on a terminal), one
line per epoch.

Rank 0 sends small events through a Ray queue the driver owns; the driver prints them. So each
line appears once, without Ray's `(RayTrainWorker pid=...)` prefix, while the workers' own output
and Ray's internal reporting stay in the Ray session's log files unless --verbose forwards them
(`connect(verbose=...)`).
"""

from __future__ import annotations

import queue
import sys
import threading
import time

from tqdm import tqdm


def duration(seconds: float) -> str:
    """'45s', '3m 05s', '2h 04m'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def epoch_line(event: dict, epochs: int, left: float | None) -> str:
    line = (
        f"epoch {event['epoch'] + 1}/{epochs}: loss {event['train_loss']:.4f}, val MAE {event['val_mae']:.1f} y, "
        f"{event['range_level']:.0%} ranges {event['val_range_width']:.0f} y wide, "
        f"{event['images_per_second']:.1f} img/s"
    )
    return line + (f", {duration(left)} left" if left is not None else "")


class TrainingConsole:
    """Renders rank 0's events ({"event": "resume" | "start" | "step" | "epoch", ...}) until closed.

    Time left is this attempt's time per finished epoch times the epochs still to run, so a
    resumed run does not count the epochs it inherited."""

    def __init__(self, events, epochs: int, progress: bool = True, stream=None):
        self.events, self.epochs, self.progress = events, epochs, progress
        self.stream = stream or sys.stderr
        self.bar: tqdm | None = None
        self.started: float | None = None
        self.finished_epochs = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="training-console", daemon=True)

    def __enter__(self) -> TrainingConsole:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self._drain()  # the last epoch's line may arrive after fit() returned
        self._close_bar()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.show(self.events.get(timeout=0.5))
            except queue.Empty:
                continue

    def _drain(self) -> None:
        while True:
            try:
                self.show(self.events.get(block=False))
            except queue.Empty:
                return

    def show(self, event: dict) -> None:
        kind = event["event"]
        if kind == "resume":  # epoch: the first one this attempt trains; step: the steps of it done
            where = f"in epoch {event['epoch'] + 1} after step {event['step']}" if event["step"] else ""
            self._write(f"resuming {where or 'after epoch ' + str(event['epoch'])} from {event['path']}")
        elif kind == "checkpoint":
            why = "a preemption notice" if event["reason"] == "preemption" else "--checkpoint-every"
            self._write(f"checkpoint in epoch {event['epoch'] + 1} at step {event['step']}/{event['steps']} ({why})")
        elif kind == "start":
            self.started = self.started or time.monotonic()
            self._close_bar()
            self.bar = tqdm(
                total=event["steps"],
                initial=event.get("step", 0),
                desc=f"epoch {event['epoch'] + 1}/{self.epochs}",
                unit="step",
                leave=False,
                disable=None if self.progress else True,  # None: only on a terminal
                file=self.stream,
            )
        elif kind == "step" and self.bar is not None:
            self.bar.update(event["step"] - self.bar.n)
            self.bar.set_postfix(loss=f"{event['loss']:.4f}", img_s=f"{event['images_per_second']:.1f}")
        elif kind == "epoch":
            self._close_bar()
            self.finished_epochs += 1
            remaining = self.epochs - event["epoch"] - 1
            left = None
            if self.started is not None and remaining > 0:
                left = (time.monotonic() - self.started) / self.finished_epochs * remaining
            self._write(epoch_line(event, self.epochs, left))

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _write(self, line: str) -> None:
        tqdm.write(line, file=self.stream)
        self.stream.flush()
