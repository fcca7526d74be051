"""The adapters ring: see docs/architecture.md."""
