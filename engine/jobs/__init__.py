"""The job lifecycle: states, the store's job queries, the transitions every runner and route
goes through, the events they publish, idempotency and the supervisor."""
