"""``python -m attnscope ARGS``: the ``attnscope`` command line, run in this process."""

import sys

from . import main

sys.exit(main())
