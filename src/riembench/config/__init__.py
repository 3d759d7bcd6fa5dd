"""Config schemas (dataclasses Hydra validates against), a run's identity, and the config sources; imports only core."""
