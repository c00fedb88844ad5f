"""hyperp: scaling-law sweeps and fits for language models trained with HyperP."""

__version__ = "0.1.0"
