"""`python -m edgetune.cli`, as the edgetune command."""

from edgetune.cli import main

main()
