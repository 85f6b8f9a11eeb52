"""The peer `make bench` measures beside the site: Panel's documented way (README, Benchmark)."""
