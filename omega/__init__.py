"""omega: reinforcement-learning agents for NetHack (NLE) and MiniHack, in JAX."""

__version__ = "0.1.0"
