"""jflow: deep-equilibrium optical flow (DEQ-RAFT) and its baselines in JAX/Flax."""

__version__ = "0.1.0"
