"""`hyperp design`: which runs would decide a question, for a compute budget.

questions.py (the number and the command whose interval it is), model.py (the response and noise model
fitted from the sweep), candidates.py (runs the sweep's axes can express, with their FLOPs and spec settings),
choose.py (greedy choice by narrowing per FLOP over simulated outcomes), output.py (DESIGN.toml),
backtest.py (calibration and the backtest on shipped ledgers). Sits above fitting, checks and sweeps;
below the CLI.
"""
