"""Benchmarks that print figures (`make bench`), and the chaos drill (`make chaos`)."""
