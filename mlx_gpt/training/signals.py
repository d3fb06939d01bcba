"""Stopping a run cleanly: Ctrl-C (SIGINT), SIGTERM (kill, a job scheduler) and SIGHUP (a
closed terminal or a logout) each ask the loop to stop after the current step, or after
the current batch of an evaluation. The loop then saves latest/, and the command exits
with 128 + the signal number (130, 143, 129), as a shell reports a process killed by
that signal. A second signal stops at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def exit_code(name: str) -> int:
    """128 + the signal's number (SIGINT 130, SIGTERM 143, SIGHUP 129); 0 for none."""
    return 128 + signal.Signals[name] if name else 0


class StopRequest:
    """Set by a signal handler, read by the loop between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


@contextmanager
def deferred_stop(request: StopRequest | None = None) -> Iterator[StopRequest]:
    """Within the block, a stop signal sets the request (a new one, or the one given); a
    second one raises KeyboardInterrupt wherever the program is (the checkpoint writer
    is atomic, so a save cut short leaves the previous checkpoint)."""
    request = StopRequest() if request is None else request
    if threading.current_thread() is not threading.main_thread():  # no handlers there
        yield request
        return

    def handler(signum, frame):
        if request:
            raise KeyboardInterrupt
        request.signum = signum

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
