"""prodstack's bundled API: alerts backed by PostgreSQL and Redis."""
