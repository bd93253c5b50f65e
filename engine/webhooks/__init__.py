"""Webhooks: the outbox rows written with each state change, and the signed delivery of them."""
