"""Stand-ins for external services that a test cannot run for real."""
