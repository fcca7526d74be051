"""The policy ring: see docs/architecture.md."""
