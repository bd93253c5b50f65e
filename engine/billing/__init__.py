"""Money: metering a prompt, pricing it per template, the append-only ledger, usage reports and
monthly budgets."""
