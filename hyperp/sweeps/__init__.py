"""Sweep engine: declarative TOML grids scheduled on Ray, results in a Parquet ledger, resume and retries.

Modules: `spec` (parse, validate, expand), `identity` (run and cell ids), `runner` (Ray scheduling,
`run_sweep`), `ledger` (per-run records and runs.parquet), `lr_search` (bracket and Optuna per cell),
`command` (sweeps of any training command: `[command]`, CommandConfig, command_run), `stubs` (run functions
for tests and benchmarks).
Spec format, CLI and ledger schema: hyperp/sweeps/README.md. The `hyperp sweep` commands live in hyperp/cli/sweep.py.
"""
