"""``python -m vms``: the same as the ``hallwatch`` command."""

import sys

from vms.cli import main

sys.exit(main())
