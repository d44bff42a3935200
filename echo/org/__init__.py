"""The organisation: roles, role agents, health, and the collaborative workflow."""
