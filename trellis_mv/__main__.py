"""``python -m trellis_mv generate IMAGE... [-o out.glb]``: see ``trellis_mv.cli``.

A Ctrl-C that the command does not take itself (``remote`` cancels its job) ends it with status 130
and one line, not a traceback: while it imports, before a job is sent or made, or while files are
written.
"""

import os
import sys
from typing import NoReturn

# The exit statuses of a stop the command took: 128 + SIGINT (Ctrl-C), 128 + SIGTERM.
STOPPED = (130, 143)


def exit_with(status: int) -> NoReturn:
    """End the process with ``status``; after a stop the command took (:data:`STOPPED`), at once.

    A signal raised inside a lock's ``with`` block can leave the lock held (urllib3's connection
    pool: its queue's ``Condition``), and at exit urllib3's finalizer of that pool waits for the lock
    for ever: ``remote`` had cancelled the job and said so, and never ended (CI, 2026-12-05, after a
    SIGTERM). After a taken stop there is nothing left to write: the streams are flushed and the
    interpreter's exit handlers skipped.
    """
    if status in STOPPED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    try:
        from .cli import main

        status = main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    exit_with(status)
