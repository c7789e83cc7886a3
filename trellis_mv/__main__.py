"""``python -m trellis_mv generate IMAGE... [-o out.glb]``: see ``trellis_mv.cli``.

A Ctrl-C that the command does not take itself (``remote`` cancels its job) ends it with status 130
and one line, not a traceback: while it imports, before a job is sent or made, or while files are
written.
"""

import sys

if __name__ == "__main__":
    try:
        from .cli import main

        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
