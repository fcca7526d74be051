"""The base ring: see docs/architecture.md."""
