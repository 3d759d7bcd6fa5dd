"""riembench: data-free neural representation compression benchmarks (RieM, Lp-norm, baselines)."""

__version__ = "0.1.0"
