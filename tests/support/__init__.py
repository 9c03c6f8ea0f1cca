"""What the test directories share: the chain helpers (:mod:`.chain`), a gateway in a thread
(:mod:`.gateway_harness`) or as a process (:mod:`.fault_harness`), a real browser (:mod:`.browser_harness`)
and an offline Kubo node (:mod:`.ipfs_fixture`). The fixtures themselves are registered by ``tests/conftest.py``."""
