"""Ledger: the chain as the gateway follows it (indexer, member names) and the batch-mode release journal
with its on-chain anchors."""
