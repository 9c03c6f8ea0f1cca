"""Access: who is calling (Sign-In with Ethereum, bearer tokens) and what they may read now (consent decisions)."""
