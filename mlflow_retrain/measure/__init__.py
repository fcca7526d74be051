"""The measure ring: see docs/architecture.md."""
