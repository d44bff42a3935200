"""`python -m echo` is the same program as `echoctl`."""

from echo.cli import main

main()
