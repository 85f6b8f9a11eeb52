"""Unit tests for the load tester's pure parts: arguments, schedule, parameters, errors, statistics, reports."""
from __future__ import annotations

import pytest

from app.loadtest.accounts import DEV_LOADTEST_PASSWORD, AccountError, check_prefix, resolve_password, username


def test_password_policy():
    assert resolve_password("dev", {}) == DEV_LOADTEST_PASSWORD
    assert resolve_password("test", {"LOADTEST_PASSWORD": "short"}) == "short"
    assert resolve_password("production", {"LOADTEST_PASSWORD": "long-enough-secret"}) == "long-enough-secret"
    for env in ({}, {"LOADTEST_PASSWORD": "elevenchars"}, {"LOADTEST_PASSWORD": DEV_LOADTEST_PASSWORD}):
        with pytest.raises(AccountError, match="LOADTEST_PASSWORD"):
            resolve_password("production", env)


def test_account_names():
    assert [username("loadtest", i) for i in (1, 42, 1000)] == ["loadtest-001", "loadtest-042", "loadtest-1000"]
    assert check_prefix("lt_a.b-1") == "lt_a.b-1"
    for bad in ("", "-x", "a b", "x" * 51, "ünï"):
        with pytest.raises(AccountError):
            check_prefix(bad)


