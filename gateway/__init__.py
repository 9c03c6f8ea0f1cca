"""HealthCode Ledger gateway: the FastAPI service hospitals call, and its portal. Layers: docs/architecture.md."""
