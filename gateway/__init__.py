"""HealthCode Ledger gateway (FastAPI service); built in the gateway issue."""
