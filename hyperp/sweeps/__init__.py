"""Sweep engine: declarative TOML grids scheduled on Ray, results in a Parquet ledger, resume and retries.

Modules, from the spec to the ledger: `spec` (the TOML format: parse, validate), `search` (the LR search types
a spec names), `plan` (expansion into runs and cells, `make_plan`, `prepare`), `identity` (run and cell ids),
`runner` (the driver and its scheduling loop, `run_sweep`), `cluster` (Ray preflight, connect, capacity,
cancel), `worker` (a run's Ray task: `execute`, the run functions), `lr_search` (bracket and Optuna per cell,
as the driver runs them), `ledger` (per-run records and runs.parquet), `status` (a sweep's counts: the driver,
`sweep status`, `sweep ls`), `estimate` (the cost model of `sweep plan`), `command` (sweeps of any training
command: `[command]`, CommandConfig, command_run), `data_parallel` (runs of several workers on Ray Train),
`stubs` (run functions for tests and benchmarks).
Spec format, CLI and ledger schema: hyperp/sweeps/README.md. The `hyperp sweep` commands live in hyperp/cli/sweep.py.
"""
