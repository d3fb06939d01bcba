"""The exceptions that end a command with one line on stderr and an exit code of its own.

A run stopped by any of them keeps what it had saved: the checkpoints on disk are
whole (see checkpoint.py) and nothing from a bad step is written.
"""

import errno


class UserError(Exception):
    """Bad input. The CLI prints the message on one line and exits with code 2."""

    exit_code = 2


class Diverged(UserError):
    """The loss stopped being a finite number (exit 3): nothing from that step is saved."""

    exit_code = 3


# The OSError numbers that mean "no room to write": a full disk, a file-size limit
# (ulimit -f), a quota.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class DiskFull(UserError):
    """A write failed for lack of space or a file-size limit (exit 4); the previous
    checkpoint is kept."""

    exit_code = 4


class PeerLost(UserError):
    """Another rank of a distributed run died or stopped answering (exit 5); rank 0's
    latest/ is whole and resumable."""

    exit_code = 5


def first_line(error: BaseException) -> str:
    """The first line of an error's message (MLX's and the hub's can run to many lines),
    or the error's type when it has no message: what a one-line error quotes."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
