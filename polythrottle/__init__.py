"""PolyThrottle: lowest energy per inference under a latency SLO, by constrained Bayesian optimization."""

__version__ = "0.1.0"
