"""The terminal's progress bar over the optimizer steps: loss and tokens/s from each log record."""

from __future__ import annotations

from retain.train.callbacks.base import Callback, LoopState


class ProgressBar(Callback):
    """A rich progress bar on stderr (main process only; transient: it leaves no trace). The
    loop that owns it calls ``close()`` on any way out (``on_train_end`` is not reached on an
    error), so a failed run leaves the terminal as it found it."""

    decides = False  # never returns a Decision

    def __init__(self) -> None:
        self._bar = self._task = None

    def on_train_begin(self, state: LoopState) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        if not state.is_main:
            return
        self._bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("loss {task.fields[loss]:.4f}"),
                             TextColumn("{task.fields[tps]:,.0f} tok/s"), TimeElapsedColumn(),
                             TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self._task = self._bar.add_task("", total=state.max_steps, completed=state.step,
                                        loss=float("nan"), tps=0.0)
        self._bar.start()

    def on_log(self, state: LoopState, record: dict) -> None:
        if self._bar is not None and record.get("event") == "train":
            self._bar.update(self._task, loss=record["loss"], tps=record["tokens_per_s"])

    def on_step_end(self, state: LoopState) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def on_train_end(self, state: LoopState) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
