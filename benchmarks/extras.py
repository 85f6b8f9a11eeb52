"""The `make bench` scenarios that live in their own modules (browser, memory), by name, and their
sections of docs/benchmarks.md, kept at the end of the page whatever bench.py rewrites before them."""
from __future__ import annotations

import re
from typing import Callable

from benchmarks import browser, memory

# name -> (the scenario against a running site: url, database URL, load-test password -> result, markdown; heading)
SCENARIOS: dict[str, tuple[Callable[[str, str, str], tuple[dict, str]], str]] = {
    "browser": (browser.scenario, browser.HEADING),
    "memory": (memory.scenario, memory.HEADING),
}
NAMES = tuple(SCENARIOS)


def run(name: str, url: str, database_url: str, password: str) -> tuple[dict, str]:
    """One scenario against a running site; both need its database (accounts, the worker registry)."""
    if not database_url:
        raise SystemExit(f"the {name} scenario needs the site's database: set DATABASE_URL with --url")
    return SCENARIOS[name][0](url, database_url, password)


def split_sections(text: str, headings: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """The text without the sections under these `## ` headings (each up to the next `## ` heading
    or the end), and those sections by heading."""
    found: dict[str, str] = {}
    for heading in headings:
        match = re.search(rf"^{re.escape(heading)}[ \t]*\n.*?(?=^## |\Z)", text, flags=re.M | re.S)
        if match:
            found[heading] = match.group(0).rstrip("\n") + "\n"
            text = text[:match.start()] + text[match.end():]
    return text, found


def merge_sections(new: str, old: str, fresh: dict[str, str]) -> str:
    """The page bench.py wrote (`new`), with this module's sections at its end: the ones this run
    made (`fresh`, by scenario name) and, for the others, what the page held before (`old`)."""
    headings = tuple(heading for _, heading in SCENARIOS.values())
    new, _ = split_sections(new, headings)
    _, kept = split_sections(old, headings)
    for name, text in fresh.items():
        kept[SCENARIOS[name][1]] = text.rstrip("\n") + "\n"
    parts = [kept[h] for h in headings if h in kept]
    return new.rstrip("\n") + "\n" + "".join("\n" + p for p in parts)
