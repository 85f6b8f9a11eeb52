"""The import contracts in pyproject.toml hold (one direction of imports, no cycles), and they
have teeth: the same contracts reject a copy of the tree with one upward import added."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "bokeh_apps", "benchmarks")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    # --no-cache: a cache from an earlier tree must not decide this run.
    return subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, upward_import, contract", [
    ("bokeh_apps/queries/rows.py", "import bokeh_apps.kit.runtime", "dashboards -> kit -> queries"),
    ("app/models.py", "import app.serving.registry", "Roles import downward"),
    ("app/serving/embed.py", "import app.web.errors", "Roles import downward"),
    ("bokeh_apps/kit/session.py", "import bokeh_apps.team", "dashboards -> kit -> queries"),
])
def test_an_upward_import_breaks_a_contract(tmp_path, module, upward_import, contract):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{upward_import}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken), result.stdout
