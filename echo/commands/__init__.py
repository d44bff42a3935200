"""The `echoctl` command groups, one module per area; `echo.cli` assembles them."""
