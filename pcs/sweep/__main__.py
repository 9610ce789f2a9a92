"""``python -m pcs.sweep FD``: a worker process of a sweep's ``process`` executor."""

import sys

from pcs.sweep._worker import main

__all__: list[str] = []

sys.exit(main())
