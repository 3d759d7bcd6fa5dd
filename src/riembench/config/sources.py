"""The config source that brings in every axis's schemas.

Each ``conf/<axis>/<name>.yaml`` inherits its dataclass schema ``<name>_schema``, which the
registries in :mod:`riembench.config` store in Hydra's ConfigStore when they are imported.
``conf/config.yaml`` names this source in its search path, so Hydra constructs it whenever it
composes riembench's configs (the CLI, or ``hydra.compose`` in a notebook or a test), and
constructing it stores every axis's schemas there (torch-free: a fraction of a second). While
the CLI only prints help or completes a command (``SchemaSource.help_only``) it stores nothing
and answers each ``*_schema`` name with an empty node instead, so help and completion never
offer schemas as options.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigResult, ConfigSource
from omegaconf import OmegaConf

SCHEME = "riembench-schemas"
#: the ConfigStore name of an entry's schema is ``<name><SUFFIX>``
SUFFIX = "_schema"


class SchemaSource(ConfigSource):
    #: set by the CLI before Hydra composes, only for --help / --hydra-help / shell completion
    help_only: bool = False

    def __init__(self, provider: str, path: str) -> None:
        super().__init__(provider=provider, path=path)
        if not SchemaSource.help_only:
            store_schemas()

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def _stands_in(self, config_path: str) -> bool:
        name = self._normalize_file_name(config_path.rstrip("/"))
        if not (SchemaSource.help_only and name.removesuffix(".yaml").endswith(SUFFIX)):
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
        return self._stands_in(config_path)

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        return []


#: what :func:`store_schemas` last stored (Hydra builds the source for every compose: storing
#: again costs a structured-config conversion per schema, most of a compose's time)
_stored: tuple[tuple[str, tuple[str, ...]], ...] | None = None


def store_schemas() -> None:
    """Every axis's schemas, and the plans' schema, into the ConfigStore; once per process
    unless an entry was declared since."""
    global _stored
    from riembench.config.identity import GROUP_REGISTRIES
    from riembench.config.run import store_plan_schema

    now = tuple((axis, tuple(r.names())) for axis, r in GROUP_REGISTRIES.items())
    if now == _stored:
        return
    for registry in GROUP_REGISTRIES.values():
        registry.store_schemas()
    store_plan_schema()
    _stored = now


def register() -> None:
    from hydra._internal.sources_registry import SourcesRegistry

    SourcesRegistry.instance().register(SchemaSource)

