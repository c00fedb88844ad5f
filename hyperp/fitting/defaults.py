"""The fits' default settings, in a module that imports nothing, so the CLI can show them in `--help` without
loading numpy, scipy or pandas. The fitting modules import them from here (one definition each)."""

from __future__ import annotations

# The bootstrap shared by every fit (hyperp.fitting.bootstrap).
DEFAULT_N_BOOT = 1000
DEFAULT_LEVEL = 0.95

# Below this R^2 the parabola does not describe the sweep (noise-dominated or not U-shaped) and the vertex is
# not trusted. 0.5 is loose on purpose: near a flat optimum a good sweep still leaves much unexplained noise.
# (hyperp.fitting.lr)
R2_MIN = 0.5

# Chinchilla approach 3 (hyperp.fitting.chinchilla): Hoffmann et al.'s Huber delta (residuals in log-loss
# beyond 1e-3 count linearly), the starts each bootstrap refit restarts from (the best distinct optima of the
# full-grid fit), and its bootstrap replicates.
HUBER_DELTA = 1e-3
BOOT_STARTS = 4
CHINCHILLA_N_BOOT = 200
