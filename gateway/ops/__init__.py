"""Operations on a data directory: one process at a time (the lock) and repairs after a crash (reconcile)."""
