"""The worker's exceptions, in one place.

- ``UserError``: the request is wrong; the message names the field and what is allowed, and it is
  answered to the client as is.
- ``WorkerError``: we failed (a bug, a broken model, an unreachable bucket); the client gets a short
  message and an id that matches the traceback in the log.
- ``StartupError``: the worker cannot serve at all (no CUDA, missing weights or extensions); raised
  before any job is taken.
"""

from __future__ import annotations

__all__ = ["StartupError", "UserError", "WorkerError"]


class UserError(ValueError):
    """A mistake in the job input. ``path`` is the field, e.g. ``images[2]`` or ``glb.texture_size``."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class WorkerError(RuntimeError):
    """A fault on our side: never the client's doing, always logged with a traceback."""


class StartupError(WorkerError):
    """The worker cannot take jobs: raised during start-up, before the first job."""
