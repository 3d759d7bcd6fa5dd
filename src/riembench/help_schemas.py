"""The config source that brings in the registries' schemas, or stand-ins for help.

Each ``conf/<axis>/<name>.yaml`` inherits its dataclass schema ``<name>_schema``, which the
registries store in Hydra's ConfigStore when the method, dataset and backbone modules are
imported; those import torch (seconds). ``conf/config.yaml`` names this source in its search
path, so Hydra constructs it whenever it composes riembench's configs (CLI, ``hydra.compose`` in
a notebook or test), and constructing it imports the registries. While the CLI only prints
help or completes a command (``SchemaStandIns.active``) it imports nothing and answers each
``*_schema`` name with an empty node instead. It never lists anything, so help and completion
do not offer schemas as options.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigResult, ConfigSource
from omegaconf import OmegaConf

SCHEME = "riembench-schemas"
SUFFIX = "_schema"


class SchemaStandIns(ConfigSource):
    #: set by the CLI before Hydra composes, only for --help / --hydra-help / shell completion
    active: bool = False

    def __init__(self, provider: str, path: str) -> None:
        super().__init__(provider=provider, path=path)
        if not SchemaStandIns.active:
            import_registries()

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def _answers(self, config_path: str) -> bool:
        name = self._normalize_file_name(config_path.rstrip("/"))
        if not (SchemaStandIns.active and name.removesuffix(".yaml").endswith(SUFFIX)):
            return False
        return ConfigStore.instance().get_type(name) != ObjectType.CONFIG  # a real one wins

    def load_config(self, config_path: str) -> ConfigResult:
        return ConfigResult(config=OmegaConf.create({}), path=f"{SCHEME}://{self.path}",
                            provider="riembench (help only)", header={"package": None})

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        return False

    def is_config(self, config_path: str) -> bool:
        return self._answers(config_path)

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        return []


def import_registries() -> None:
    """Import every built-in method, dataset and backbone (registering them and their schemas)."""
    import riembench.backbones
    import riembench.data
    import riembench.methods
    import riembench.size  # noqa: F401
    from riembench.config import register_plan_schema

    register_plan_schema()


def register() -> None:
    from hydra._internal.sources_registry import SourcesRegistry

    SourcesRegistry.instance().register(SchemaStandIns)
