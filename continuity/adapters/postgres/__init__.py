"""PostgreSQL: connections, the control database, sandboxes, checks and tenant databases."""
