"""``python -m remotecell ...``: the ``remotecell`` command."""

import sys

from .cli import main

sys.exit(main())
