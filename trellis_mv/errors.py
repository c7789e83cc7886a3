"""The worker's exceptions, in one place.

- ``UserError``: the request is wrong; the message names the field and what is allowed, and it is
  answered to the client as is.
- ``WorkerError``: we failed (a bug, a broken model, an unreachable bucket); the client gets a short
  message and an id that matches the traceback in the log.
- ``StartupError``: the worker cannot serve at all (no CUDA, missing weights or extensions, a bucket
  that is missing or refuses the credentials); raised before any job is taken.
- ``StorageError``: the bucket refused or could not be reached during a job. Not the client's doing,
  nor a bug of ours: the worker's ``BUCKET_*`` configuration (or the store) needs fixing, so the
  answer names the bucket and the cause, and the log holds one line, no traceback.

``first_line`` makes any exception a one-line report (the start-up checks, a checkpoint's header).
"""

from __future__ import annotations

__all__ = ["StartupError", "StorageError", "UserError", "WorkerError", "first_line"]


class UserError(ValueError):
    """A mistake in the job input. ``path`` is the field, e.g. ``images[2]`` or ``glb.texture_size``."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class WorkerError(RuntimeError):
    """A fault on our side: never the client's doing; logged with a traceback unless a subclass says otherwise."""


class StartupError(WorkerError):
    """The worker cannot take jobs: raised during start-up, before the first job."""


class StorageError(WorkerError):
    """The bucket refused an upload or could not be reached: a configuration problem, answered as is."""


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type's name where it has none: for one-line reports."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
