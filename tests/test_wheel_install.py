"""``pip install`` of the built wheel works outside the checkout: configs ship in the package,
the three commands exist, and one table-5 cell runs from a folder far from the source tree."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args, **kw):
    return subprocess.run(args, check=False, capture_output=True, text=True, timeout=600, **kw)


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RIEMBENCH_CONF")}
    return {**env, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel, built from a copy of the sources (the checkout gets no build/ or egg-info)."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools (the dev extra)")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "local")
    shutil.copytree(ROOT / "src", src / "src", ignore=ignore)
    shutil.copytree(ROOT / "conf", src / "conf", ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", str(tmp / "dist"), str(src)], env=_clean_env())
    assert built.returncode == 0, built.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("riembench-*.whl")
    return whl


def test_wheel_ships_configs_and_declares_python_and_commands(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith("METADATA"))).decode()
        entry = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "riembench/conf/config.yaml" in names and "riembench/conf/method/svd.yaml" in names
    assert not any("/conf/local/" in n for n in names)
    assert "Requires-Python: >=3.11" in meta
    assert "Requires-Dist: torch<3,>=2.2" in meta or "Requires-Dist: torch>=2.2,<3" in meta
    assert 'transformers>=4.40; extra == "detection"' in meta
    for cmd in ("riembench =", "riembench-train =", "riembench-report ="):
        assert cmd in entry


def test_installed_wheel_runs_a_cell_outside_the_checkout(wheel, tmp_path):
    """A fresh venv sees this venv's dependencies (a .pth, so torch is not reinstalled) but only
    the wheel's riembench."""
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    inst = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                 "--no-index", "-q", str(wheel)], env=_clean_env())
    assert inst.returncode == 0, inst.stderr[-3000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _clean_env(RIEMBENCH_STORE=str(work / "runs"), HOME=str(work))
    where = _run([str(py), "-c", "import riembench; print(riembench.__file__)"], cwd=work, env=env)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr

    helped = _run([str(venv / "bin" / "riembench"), "--help"], cwd=work, env=env)
    assert helped.returncode == 0 and "method: " in helped.stdout, helped.stderr[-2000:]
    cell = _run([str(venv / "bin" / "riembench"), "method=nystroem", "dataset.n=40", "seeds=[0,1]"],
                cwd=work, env=env)
    assert cell.returncode == 0, cell.stderr[-3000:]
    records = list((work / "runs" / "table5").glob("*.json"))
    assert len(records) == 2
    assert json.loads(records[0].read_text())["metrics"]["test_error"] > 0
    assert "2 records in" in cell.stdout + cell.stderr
    report = _run([str(venv / "bin" / "riembench-report"), "table5", "--store", str(work / "runs"),
                   "--out", str(work / "tables"), "--all-records"], cwd=work, env=env)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (work / "tables" / "table5.csv").is_file()


def _python312() -> str | None:
    for cand in ("python3.12", str(Path.home() / ".pyenv/versions/3.12.1/bin/python3.12")):
        path = shutil.which(cand) or (cand if Path(cand).is_file() else None)
        if path and _run([path, "--version"]).returncode == 0:
            return path
    return None


def test_wheel_installs_on_python_312(wheel, tmp_path):
    """pip on 3.12 accepts the wheel (requires-python) and the package compiles there; running
    it needs a torch build for 3.12, which this machine does not have."""
    py312 = _python312()
    if py312 is None:
        pytest.skip("no Python 3.12 interpreter here")
    venv = tmp_path / "v312"
    assert _run([py312, "-m", "venv", "--without-pip", str(venv)]).returncode == 0
    py = venv / "bin" / "python"
    inst = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                 "--no-index", "-q", str(wheel)], env=_clean_env())
    assert inst.returncode == 0, inst.stderr[-3000:]
    comp = _run([str(py), "-m", "compileall", "-q", "-x", "conf",
                 str(next((venv / "lib").glob("python3.12/site-packages")) / "riembench")])
    assert comp.returncode == 0, comp.stdout + comp.stderr
