"""`python -m rides.cli`."""

from rides.cli.base import main

main()
