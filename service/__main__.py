"""``python -m service`` runs the calhooks command line."""

from service.cli.main import main

main()
