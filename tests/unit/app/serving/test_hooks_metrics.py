"""The gunicorn master's part in metrics: no start without a metrics directory, and a previous
run's files gone before the first worker forks."""
from __future__ import annotations

import pytest

from app import metrics
from app.config import ConfigError
from app.serving import hooks

ENV = {"APP_ENV": "test", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}


@pytest.fixture
def env(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_the_master_refuses_to_start_without_a_metrics_directory(env):
    env.delenv(metrics.MULTIPROC_ENV, raising=False)
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        hooks.master_starting()


def test_the_master_empties_the_metrics_directory(env, tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_4242.db").write_bytes(b"stale")
    (directory / "gauge_livesum_4243.db").write_bytes(b"stale")
    env.setenv(metrics.MULTIPROC_ENV, str(directory))
    assert hooks.master_starting().prometheus_multiproc_dir == str(directory)
    assert list(directory.iterdir()) == []
