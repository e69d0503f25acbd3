"""``python -m calhooks.service``: no arguments serve (as ``calhooks serve``); else the CLI."""

import sys

if len(sys.argv) <= 1:
    from calhooks.service.cli.serve import run

    run()
else:
    from calhooks.service.cli.main import main

    main()
