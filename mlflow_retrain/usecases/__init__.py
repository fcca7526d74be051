"""The usecases ring: see docs/architecture.md."""
