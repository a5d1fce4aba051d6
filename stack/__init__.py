"""The whole system as separate processes on free loopback ports, and what talks to it as the
outside world would: shared by the full-stack tests, the benchmark and the chaos drill."""
