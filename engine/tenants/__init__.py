"""Tenants, their API keys (resolved through a short-lived cache) and their rate limits."""
