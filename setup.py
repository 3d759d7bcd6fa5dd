"""Package layout: the code under src/, and the top-level config tree conf/ shipped inside the
package as ``riembench.conf`` (metadata, dependencies and entry points are in pyproject.toml)."""

from setuptools import find_namespace_packages, find_packages, setup

CONF = ["riembench.conf"] + [f"riembench.conf.{p}" for p in find_namespace_packages("conf")
                             if not p.startswith("local")]

setup(packages=find_packages("src") + CONF, package_dir={"": "src", "riembench.conf": "conf"})
