"""Rules that a request and the worker's settings share, written once (stdlib only).

``schema`` checks a request's ``output.expires_in`` and ``output.key_prefix`` with them, and
``config`` checks ``TRELLIS_MV_URL_EXPIRES_S`` and ``TRELLIS_MV_KEY_PREFIX``, the defaults those fields
fall back to: a default the request itself could not send is refused at start-up.
"""

from __future__ import annotations

__all__ = ["KEY_PREFIX_RULE", "MAX_EXPIRES_IN", "MIN_EXPIRES_IN", "key_prefix_allowed"]

# S3 SigV4 presigned URLs live at most 7 days; under a minute a client could hardly fetch the GLB.
MIN_EXPIRES_IN = 60
MAX_EXPIRES_IN = 7 * 24 * 3600
KEY_PREFIX_RULE = "1 to 200 letters, digits, '.', '_', '-' and '/' (not at either end, no empty or '..' parts)"
_KEY_PREFIX_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/")


def key_prefix_allowed(value: str) -> bool:
    """Whether ``value`` may start an object key: see ``KEY_PREFIX_RULE``."""
    return (
        1 <= len(value) <= 200
        and set(value) <= _KEY_PREFIX_CHARS
        and not value.startswith("/")
        and not value.endswith("/")
        and "//" not in value
        and ".." not in value.split("/")
    )
