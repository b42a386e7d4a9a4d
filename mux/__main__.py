"""``python -m mux``: the same as the ``mux`` command."""

import sys

from mux.cli import main

sys.exit(main())
