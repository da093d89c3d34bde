"""``_guard.py PARENT_PID CMD...``: exec CMD so that it gets SIGTERM when the
bench process dies (Linux ``PR_SET_PDEATHSIG``; survives ``execve``).

Kept tiny and import-light: it runs before every process the bench starts.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1

if __name__ == "__main__":
    parent, argv = int(sys.argv[1]), sys.argv[2:]
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the bench's own cleanup still stops us
    if os.getppid() != parent:  # the bench died before prctl took effect
        sys.exit(1)
    os.execvp(argv[0], argv)
