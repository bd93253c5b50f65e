"""The job store's database: tables, the SQLite/PostgreSQL engine and its thread hop, cursors,
the bounds of what reaches a query, and migrations."""
