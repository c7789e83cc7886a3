"""``python -m trellis_mv generate IMAGE... [-o out.glb]``: see ``trellis_mv.cli``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
