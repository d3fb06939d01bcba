"""Noticing a lost peer in a distributed run (ranks.py): a watchdog over each collective,
and a filter that keeps the ring backend's own lines off stderr."""

from __future__ import annotations

import atexit
import os
import sys
import threading

from mlx_gpt.errors import PeerLost

# stderr as it was before quiet_ring_messages (the watchdog writes its line there)
_stderr_fd = 2
# what drain() writes through the filter to learn that the lines before it are out
_DRAINED = b"\0mlx-gpt: drained\n"


def quiet_ring_messages() -> None:
    """Drop the ring backend's own "[ring] ..." lines from stderr (a lost peer prints
    dozens of them from C++): our one line says what happened. Everything else on
    stderr passes through a pipe unchanged."""
    global _stderr_fd
    read_end, write_end = os.pipe()
    _stderr_fd = os.dup(2)
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)

    drained = threading.Event()

    def pump() -> None:
        with os.fdopen(read_end, "rb") as src:
            for line in src:
                if line.endswith(_DRAINED):  # a C++ write may have run into it
                    line = line[: -len(_DRAINED)]
                    drained.set()
                if line and not line.startswith(b"[ring]"):
                    os.write(_stderr_fd, line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()

    def drain() -> None:
        """At exit, wait until the pump has passed on every line written so far. The
        filter stays in place to the end: the ring's threads outlive this handler and
        still write as the process ends (a lost peer's "[ring] Sending ... failed")."""
        sys.stderr.flush()
        os.write(2, _DRAINED)
        drained.wait(timeout=2)

    atexit.register(drain)


class Watchdog:
    """Ends the process (exit 5, one line) if the collective it guards takes more than
    the peer timeout: a peer that hangs never closes its sockets, so no error comes."""

    def __init__(self, ranks):
        self.ranks = ranks
        self.done = threading.Event()

    def __enter__(self):
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        return False

    def _watch(self) -> None:
        if self.done.wait(self.ranks.timeout):
            return
        message = self.ranks.lost_message(
            f"no answer in {self.ranks.timeout:g} s: it hangs or its host is unreachable"
        )
        if self.ranks.hint:
            message += f"; {self.ranks.hint()}"
        os.write(_stderr_fd, f"error: rank {self.ranks.rank}: {message}\n".encode())
        os._exit(PeerLost.exit_code)
