"""Unit tests for the load tester's pure parts: arguments, schedule, parameters, errors, statistics, reports."""
from __future__ import annotations

import asyncio


def test_the_caching_resolver_resolves_each_address_once():
    import socket

    from app.loadtest.site_client import CachingResolver

    calls = []

    class Counting:
        async def resolve(self, host, port, family=socket.AF_UNSPEC):
            calls.append((host, port))
            return [(socket.AF_INET, (host, port))]

    async def scenario():
        resolver = CachingResolver()
        resolver._fallback = Counting()
        first = [await resolver.resolve("127.0.0.1", 8080) for _ in range(3)]
        other = await resolver.resolve("127.0.0.1", 8081)
        return first, other
    first, other = asyncio.run(scenario())
    assert first == [[(socket.AF_INET, ("127.0.0.1", 8080))]] * 3 and other == [(socket.AF_INET, ("127.0.0.1", 8081))]
    assert calls == [("127.0.0.1", 8080), ("127.0.0.1", 8081)]
