from riembench.registry import Registry

DATASETS: Registry = Registry("dataset")
