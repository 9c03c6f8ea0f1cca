"""Notifications of new accesses: the feed that fills the outbox, the hub behind live streams, webhooks."""
