"""The query engine: service, user queue, coalescer, slots, prefetch, row encoding, notifications."""
