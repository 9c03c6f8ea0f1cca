"""Storage: the gateway's data at rest (SQLite database, ciphertext store, record encryption, the KEK)."""
