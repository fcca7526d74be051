"""The loop ring: see docs/architecture.md."""
