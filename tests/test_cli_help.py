"""``riembench --help`` and shell completion without torch; schemas are not options."""

import os
import subprocess
import sys

import pytest

from riembench.cli.main import check_choices
from riembench.core.errors import RiembenchError

ENV = {**os.environ, "WANDB_MODE": "disabled"}


def _cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "riembench.cli.main", *args], env={**ENV, **env},
                          check=False, capture_output=True, text=True, timeout=300)


def test_importing_the_cli_and_config_does_not_import_torch():
    code = ("import sys, riembench.cli.main, riembench.config.run, riembench.config.sources; "
            "print(sorted(m for m in ('torch', 'torchvision', 'sklearn', 'wandb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=ENV, check=True, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_help_lists_options_but_no_schemas_and_never_imports_torch():
    code = ("import sys, runpy; sys.argv = ['riembench', '--help']\n"
            "try:\n    runpy.run_module('riembench.cli.main', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], env=ENV, check=False, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip().endswith("NO-TORCH"), out.stdout[-500:] + out.stderr[-2000:]
    assert "method: autoencoder" in out.stdout and "svd" in out.stdout
    assert "_schema" not in out.stdout
    assert "riembench --cfg job" in out.stdout  # footer: where the full config is


def test_completion_offers_no_schema():
    out = _cli("-sc", "query=bash", COMP_LINE="riembench method=sv")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["method=svd"]


def test_a_schema_is_not_runnable(tmp_path):
    out = _cli("method=svd_schema", "dataset.n=40", RIEMBENCH_STORE=str(tmp_path / "runs"))
    assert out.returncode != 0
    assert "is the schema of" in out.stderr and "not a" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_every_axis_refuses_its_schemas():
    check_choices({"method": "svd", "dataset": "synthetic", "size": "ratio", "backbone": "none"})
    for axis, name in (("dataset", "synthetic"), ("size", "ratio"), ("backbone", "lenet5")):
        with pytest.raises(RiembenchError, match=f"{axis}={name}_schema is the schema"):
            check_choices({axis: f"{name}_schema"})


@pytest.mark.parametrize("module,args", [
    ("riembench.cli.main", ["--cfg", "job", "method=svd"]),
    ("riembench.cli.main", ["method=svdd"]),
    ("riembench.cli.main", ["method.fit.stpes=3"]),
    ("riembench.cli.main", ["table=table5", "dry_run=true"]),
    ("riembench.cli.main", ["method=svd", "dataset.n=40", "dry_run=true"]),
    ("riembench.cli.report", ["table5", "--store", "{tmp}/empty-store"]),
])
def test_commands_that_compute_nothing_import_neither_torch_nor_sklearn(module, args, tmp_path):
    """Composing, printing, errors, dry runs and a report of an empty store answer without the
    heavy libraries (benchmarks/cli_startup.py times them)."""
    args = [a.format(tmp=tmp_path) for a in args]
    code = (f"import sys, runpy; sys.argv = ['riembench', *{args!r}]\n"
            f"try:\n    runpy.run_module({module!r}, run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path,
                         env={**ENV, "RIEMBENCH_CACHE": str(tmp_path / "cache"),
                              "RIEMBENCH_STORE": str(tmp_path / "runs")})
    assert out.stdout.strip().endswith("HEAVY []"), out.stdout[-500:] + out.stderr[-2000:]
