"""Real services and images for the test suite: PostgreSQL, Redis, Docker, Debian base images."""
