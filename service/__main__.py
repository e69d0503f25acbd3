"""``python -m service``: with no arguments, serve (like ``calhooks serve``); else the CLI."""

import sys

if len(sys.argv) <= 1:
    from service.cli.serve import run

    run()
else:
    from service.cli.main import main

    main()
