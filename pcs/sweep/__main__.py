"""``python -m pcs.sweep --zygote FD``: the server that forks a ``process`` sweep's workers;
``python -m pcs.sweep FD``: one worker process (serving trials on the socket ``FD``)."""

import sys

__all__: list[str] = []

if len(sys.argv) == 3 and sys.argv[1] == "--zygote":
    from pcs.sweep._zygote import serve

    sys.exit(serve(int(sys.argv[2])))

from pcs.sweep._worker import main  # noqa: E402

sys.exit(main())
