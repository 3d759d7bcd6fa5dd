"""Config schemas (dataclasses Hydra validates against), a run's identity, the registries of the
sweep axes, and the config sources; imports only core.

Importing the package registers the config source that ``conf/config.yaml``'s search path names
(:mod:`riembench.config.sources`), so any composition of riembench's configs finds it.
"""

from riembench.config.sources import register as _register_schema_source

_register_schema_source()
