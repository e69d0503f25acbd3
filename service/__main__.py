"""``python -m calhooks.service``: no arguments serve (as ``calhooks serve``); else the CLI."""

import sys

from calhooks.service.cli.main import exit_on_bad_settings, main

if len(sys.argv) <= 1:
    from calhooks.service.cli.serve import run

    exit_on_bad_settings(run)
else:
    main()
