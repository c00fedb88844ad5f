"""The ledger contract (hyperp.schema), adoption of records the driver never stamped, and migration of
schema-1 sweeps. No Ray: every sweep here has nothing left to run, which is what these tests check."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pandas as pd
import pytest

from hyperp import identity, io, schema
from hyperp.sweeps import ledger
from hyperp.sweeps.plan import make_plan
from hyperp.sweeps.runner import Driver, run_sweep
from hyperp.sweeps.spec import loads_spec
from hyperp.sweeps.worker import execute, resolve_run_fn, train_run
from hyperp.sweeps.stubs import TINY_BASE_TOML
from hyperp.config import RunConfig

README = Path(__file__).resolve().parents[1] / "hyperp" / "sweeps" / "README.md"
INT_COLUMNS = [name for name, kind in schema.COLUMNS if kind == schema.INT]


# ---------------------------------------------------------------- the schema


def test_normalise_gives_every_column_with_its_type():
    row = schema.normalise({"run_id": "abc", "steps": 12.0, "depth": 2, "val_loss": None, "attn_gate": 1,
                            "custom_metric": 0.5})
    assert list(row) == list(schema.COLUMN_NAMES)
    assert row["steps"] == 12 and isinstance(row["steps"], int) and row["depth"] == 2
    assert math.isnan(row["val_loss"]) and row["diverged_step"] is None and row["attn_gate"] is True
    assert json.loads(row["extra_json"]) == {"custom_metric": 0.5}  # kept, not a column of its own
    with pytest.raises(ValueError, match="steps"):
        schema.normalise({"steps": 1.5})


def test_table_has_the_schema_with_nullable_integers():
    table = schema.to_table([{"run_id": "a", "steps": 8, "val_loss": 3.0},
                             {"run_id": "b", "status": schema.FAILED, "val_loss": math.nan}], stamp=True)
    assert table.schema.equals(schema.arrow_schema())
    assert table.schema.field("steps").type == pa.int64() and table.column("steps").to_pylist() == [8, None]
    assert table.column("val_loss").to_pylist() == [3.0, None]  # NaN is stored as null
    assert table.column("schema_version").to_pylist() == [schema.SCHEMA_VERSION] * 2
    frame = schema.to_frame([{"run_id": "a", "steps": 8}, {"run_id": "b"}])
    assert str(frame["steps"].dtype) == "Int64" and frame["steps"].isna().tolist() == [False, True]


def test_every_column_is_documented_in_the_sweeps_readme():
    text = README.read_text()
    table = text[text.index("### `runs.parquet` columns"):text.index("### Curves")]
    documented = set(re.findall(r"`([a-z_0-9<>]+)`", table))
    config = set(RunConfig().to_dict())
    for name in schema.COLUMN_NAMES:
        indicator = name.rsplit("_", 1)[0] if name.endswith(("_final", "_max")) else None
        assert (name in documented or name in config or indicator in schema.STABILITY_INDICATORS), name
    for name in schema.STABILITY_INDICATORS:
        assert f"`{name}`" in table, name
    for status in schema.STATUSES:
        assert f"`{status}`" in table, status


def test_plain_train_record_has_the_schema_and_its_identity(tmp_path):
    from hyperp.trainer.loop import train  # noqa: PLC0415

    cfg = RunConfig.from_dict({"depth": 1, "aspect_ratio": 32, "head_dim": 16, "seq_len": 32, "batch_tokens": 512,
                               "tokens": 2048, "val_tokens": 512, "peak_tflops": 1.0})
    train(cfg, tmp_path)
    record = pq.read_table(tmp_path / schema.RUNS_FILE)
    assert record.schema.equals(schema.arrow_schema())
    row = record.to_pylist()[0]
    assert row["run_id"] == identity.run_id(cfg) and row["cell_id"] == identity.cell_id(cfg)
    assert row["sweep"] is None and row["schema_version"] == schema.SCHEMA_VERSION and row["steps"] == 4
    assert set(pq.read_table(tmp_path / schema.CURVES_FILE).column("run_id").to_pylist()) == {row["run_id"]}


# ---------------------------------------------------------------- a sweep with one tiny trained run

TAG = "v7"  # a non-empty version_tag: ids under it differ from the trainer's own tag-less id


def one_run_spec(tmp_path: Path, name: str = "one", body: str = "") -> Path:
    spec = tmp_path / f"{name}.toml"
    spec.write_text(f'name = "{name}"\nversion_tag = "{TAG}"\n' + TINY_BASE_TOML + body)
    return spec


def test_run_finished_after_the_driver_died_is_adopted_not_retrained(tmp_path):
    """The worker trained the run and wrote the trainer's outputs, but the driver was killed before stamping
    the record: the next run_sweep keeps the run (no Ray, nothing submitted, one attempt, trained once)."""
    spec = one_run_spec(tmp_path)
    plan = make_plan(loads_spec(spec.read_text()))
    (run,) = plan.runs
    out = ledger.run_dir(tmp_path / "sweeps" / "one", run.run_id)
    res = execute(train_run, run.config.to_json(), str(out), threads=1)  # the worker's whole body
    assert res["status"] == schema.COMPLETED
    trainer_row = pq.read_table(out / schema.RUNS_FILE).to_pylist()[0]
    assert trainer_row["sweep"] is None and trainer_row["run_id"] == run.run_id  # not stamped by a driver
    assert pq.read_table(out / schema.CURVES_FILE).column("run_id").to_pylist()[0] == run.run_id

    again = run_sweep(spec, tmp_path / "sweeps")
    assert again.submitted == 0 and not again.started_ray and again.counts[schema.COMPLETED] == 1
    rec = ledger.read_record(out / schema.RUNS_FILE)
    assert rec["sweep"] == "one" and rec["cell_id"] == run.cell_id and rec["lr_search"] == "grid"
    assert rec["attempts"] == 1 and rec["resumed_step"] == -1 and rec["val_loss"] == trainer_row["val_loss"]
    assert pq.read_schema(out / schema.RUNS_FILE).equals(schema.arrow_schema())


def test_record_without_sweep_columns_of_any_schema_is_adopted(tmp_path):
    """An older trainer's record: no run_id, no sweep columns, ints as floats (a permissive concat)."""
    spec = one_run_spec(tmp_path, "bare")
    (run,) = make_plan(loads_spec(spec.read_text())).runs
    root = tmp_path / "sweeps"
    row = schema.config_columns(run.config) | {"status": schema.COMPLETED, "val_loss": 4.0, "steps": 8.0,
                                               "schema_version": schema.SCHEMA_VERSION}
    row = {k: v for k, v in row.items() if v is not None}
    out = ledger.run_dir(root / "bare", run.run_id)
    out.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row]), out / schema.RUNS_FILE)
    res = run_sweep(spec, root)
    assert res.submitted == 0 and res.counts[schema.COMPLETED] == 1
    rec = ledger.read_record(out / schema.RUNS_FILE)
    assert rec["run_id"] == run.run_id and rec["sweep"] == "bare" and rec["steps"] == 8 and rec["val_loss"] == 4.0


def test_every_record_has_the_schema_and_a_glob_reads_the_sweep(tmp_path):
    """Completed (trainer), failed and infra_failed records and the top-level ledger: one schema, one glob."""
    spec = one_run_spec(tmp_path, "glob", "[axes]\nseed = [0, 1, 2]\n")
    plan = make_plan(loads_spec(spec.read_text()))
    sweep = tmp_path / "sweeps" / "glob"
    d = Driver(plan, sweep, resolve_run_fn(None))
    ok, failed, infra = plan.runs
    d.record(ok, execute(train_run, ok.config.to_json(), str(ledger.run_dir(sweep, ok.run_id)), threads=1))
    d.record(failed, {"status": schema.FAILED, "error": "RuntimeError: boom"})
    d.record(infra, d.infra_result(infra, RuntimeError("worker died")))
    d.write_outputs()
    files = sorted(sweep.glob("runs/*/runs.parquet")) + [sweep / schema.RUNS_FILE]
    for f in files:
        assert pq.read_schema(f).equals(schema.arrow_schema()), f
    glob = sorted(str(f) for f in sweep.glob("runs/*/runs.parquet"))  # runs/*/runs.parquet, as polars takes it
    table = ds.dataset(glob, format="parquet").to_table()  # the schema of the first file holds for all
    assert table.num_rows == 3 and table.schema.equals(schema.arrow_schema())
    by_status = {r["status"]: r for r in table.to_pylist()}
    assert set(by_status) == {schema.COMPLETED, schema.FAILED, schema.INFRA_FAILED}
    for name in INT_COLUMNS:
        assert table.schema.field(name).type == pa.int64()
    assert by_status[schema.FAILED]["steps"] is None and by_status[schema.COMPLETED]["steps"] == 8
    assert by_status[schema.FAILED]["n_params"] == by_status[schema.COMPLETED]["n_params"] > 0
    assert by_status[schema.FAILED]["git_commit"] == identity.git_commit()
    assert all(r["schema_version"] == schema.SCHEMA_VERSION for r in table.to_pylist())
    polars = pytest.importorskip("polars")  # the reader of the report; in the dev extra
    df = polars.read_parquet(str(sweep / "runs" / "*" / schema.RUNS_FILE))
    assert df.height == 3 and df.schema["steps"] == polars.Int64 and df["steps"].null_count() == 2


# ---------------------------------------------------------------- migration of a schema-1 sweep


def legacy_cell_id(cfg: RunConfig, tag: str) -> str:
    """The schema-1 cell id (hyperp 0.1.0): sha256 over the full config JSON without lr."""
    d = cfg.to_dict()
    d.pop("lr")
    return hashlib.sha256(f"hyperp 0.1.0|{tag}|{json.dumps(d, sort_keys=True)}".encode()).hexdigest()[:12]


MIGRATE_BODY = ('[axes]\ntags = [{lr_opt = "0.01"}]\nseed = [0, 1]\n'
                'lr = { search = "bracket", grid = [0.005, 0.01, 0.02] }\n')


def write_legacy_sweep(spec: Path, root: Path, seeds: tuple[int, ...] = ()) -> tuple[Path, dict[str, str]]:
    """A sweep as hyperp 0.1.0 wrote it: old ids, records without schema_version or resumed_step, float64 steps
    in a failed-run-like record, plan.json and searches.json under the old ids. Returns (dir, old -> new ids).
    `seeds`: repeats of the first run with these seeds, in its cell (a search's seed runs)."""
    spec_obj = loads_spec(spec.read_text())
    plan = make_plan(spec_obj)
    sweep = root / spec_obj.name
    fn = resolve_run_fn("hyperp.sweeps.stubs:stub_run")
    ids, rows = {}, []
    first = plan.runs[0].config
    configs = [(r.config, r.config) for r in plan.runs] + [(first.replace(seed=s), first) for s in seeds]
    for config, cell_config in configs:
        old, old_cell = identity.legacy_run_id(config.to_json(), TAG), legacy_cell_id(cell_config, TAG)
        ids[old] = identity.run_id(config, TAG)
        row = schema.config_columns(config) | fn(config, "") | {
            "run_id": old, "sweep": spec_obj.name, "cell_id": old_cell, "lr_search": "bracket", "attempts": 1,
            "code_version": "0.1.0", "steps": float(config.total_steps), "host": "old-host"}
        row = {k: v for k, v in row.items() if k not in ("schema_version", "git_commit", "results_version",
                                                         "resumed_step", "extra_json")}
        out = sweep / "runs" / old
        out.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist([row]), out / schema.RUNS_FILE)
        rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows), sweep / schema.RUNS_FILE)
    (sweep / schema.SPEC_FILE).write_text(spec.read_text())
    old_plan = {"sweep": spec_obj.name, "version_tag": TAG, "varying": ["seed", "lr"],
                "runs": [{"run_id": r["run_id"], "cell_id": r["cell_id"]} for r in rows],
                "cells": [{"cell_id": c, "search": None, "fields": {}} for c in {r["cell_id"] for r in rows}]}
    (sweep / schema.PLAN_FILE).write_text(json.dumps(old_plan))
    (sweep / schema.SEARCH_FILE).write_text(json.dumps([{"cell_id": r["cell_id"]} for r in rows]))
    return sweep, ids


def snapshot(sweep: Path) -> dict[str, bytes]:
    return {str(p.relative_to(sweep)): p.read_bytes() for p in sorted(sweep.rglob("*")) if p.is_file()}


def test_old_ledger_is_read_in_memory_without_writing(tmp_path):
    spec = one_run_spec(tmp_path, "legacy", MIGRATE_BODY)
    sweep, ids = write_legacy_sweep(spec, tmp_path / "sweeps")
    before = snapshot(sweep)
    records = ledger.load_records(sweep)
    assert set(records) == set(ids) and ledger.needs_migration(sweep, records, TAG)
    assert all(r["schema_version"] is None and r["resumed_step"] is None and r["steps"] == 8
               for r in records.values())
    df = ledger.read_ledger(sweep)
    assert list(df.columns) == list(schema.COLUMN_NAMES) and len(df) == len(ids)
    assert snapshot(sweep) == before


def test_migrate_renames_rewrites_and_a_rerun_schedules_nothing(tmp_path):
    spec = one_run_spec(tmp_path, "legacy", MIGRATE_BODY)
    root = tmp_path / "sweeps"
    sweep, ids = write_legacy_sweep(spec, root)
    stranger = sweep / "runs" / "0123456789ab"  # a record under an id of some other tag: left alone
    stranger.mkdir()
    (stranger / schema.RUNS_FILE).write_bytes((sweep / "runs" / next(iter(ids)) / schema.RUNS_FILE).read_bytes())

    res = run_sweep(spec, root, run_fn="hyperp.sweeps.stubs:stub_run")  # migrates on load
    assert res.submitted == 0 and not res.started_ray and res.counts[schema.COMPLETED] == len(ids) == 6
    assert sorted(p.name for p in (sweep / "runs").iterdir()) == sorted([*ids.values(), stranger.name])
    for old, new in ids.items():
        rec = ledger.read_record(sweep / "runs" / new / schema.RUNS_FILE)
        assert rec["run_id"] == new and rec["schema_version"] == schema.SCHEMA_VERSION and rec["steps"] == 8
        assert rec["cell_id"] == identity.cell_id(RunConfig.from_dict(json.loads(rec["config_json"])), TAG)
        assert rec["host"] == "old-host" and rec["code_version"] == "0.1.0"  # the record's facts are kept
        assert pq.read_schema(sweep / "runs" / new / schema.RUNS_FILE).equals(schema.arrow_schema())
    assert (stranger / schema.RUNS_FILE).is_file()
    assert {s["cell_id"] for s in res.searches} == {r.cell_id for r in res.plan.runs}
    assert all(s["bracketed"] for s in res.searches)
    top = pq.read_table(sweep / schema.RUNS_FILE)
    assert sorted(top.column("run_id").to_pylist()) == sorted(ids.values())

    before = snapshot(sweep)
    again = ledger.migrate(sweep)  # idempotent: nothing to rename or rewrite
    assert again.rewritten == 0 and not again.renamed and list(again.left) == [str(stranger)]
    assert snapshot(sweep) == before
    records = ledger.load_records(sweep)
    assert not ledger.needs_migration(sweep, records, TAG)  # the stranger is stale, not a reason to migrate again
    assert run_sweep(spec, root, run_fn="hyperp.sweeps.stubs:stub_run").submitted == 0
    driver_files = (schema.LOCK_FILE, schema.STATE_FILE)  # a sweep run takes the lock and writes its heartbeat
    assert {k: v for k, v in snapshot(sweep).items() if k not in driver_files} == \
        {k: v for k, v in before.items() if k not in driver_files}


def test_standalone_migrate_maps_ids_in_the_json_files(tmp_path):
    spec = one_run_spec(tmp_path, "legacy", MIGRATE_BODY)
    sweep, ids = write_legacy_sweep(spec, tmp_path / "sweeps")
    done = ledger.migrate(sweep)  # tag from plan.json
    assert done.renamed == ids and done.rewritten == len(ids) and not done.left
    plan = json.loads((sweep / schema.PLAN_FILE).read_text())
    assert {r["run_id"] for r in plan["runs"]} == set(ids.values())
    new_cells = {r["cell_id"] for r in ledger.load_records(sweep).values()}
    assert {c["cell_id"] for c in plan["cells"]} == new_cells
    assert {s["cell_id"] for s in json.loads((sweep / schema.SEARCH_FILE).read_text())} == new_cells


def test_migrate_keeps_a_searchs_seed_runs_in_its_cell(tmp_path):
    """A seed run's config has another seed than its cell's, so its own config names another cell: migration
    must give it the cell its search's runs move to, and map the old cell id to that one alone."""
    spec = one_run_spec(tmp_path, "seeded", '[axes]\nlr = { search = "bracket", grid = [0.005, 0.01, 0.02], seeds = 3 }\n')
    sweep, ids = write_legacy_sweep(spec, tmp_path / "sweeps", seeds=(1, 2))
    (cell,) = make_plan(loads_spec(spec.read_text())).cells
    done = ledger.migrate(sweep)
    assert done.rewritten == len(ids) == 5 and not done.left
    records = ledger.load_records(sweep)
    assert set(records) == set(ids.values()) and {r["seed"] for r in records.values()} == {0, 1, 2}
    assert {r["cell_id"] for r in records.values()} == {cell}
    assert {s["cell_id"] for s in json.loads((sweep / schema.SEARCH_FILE).read_text())} == {cell}


def test_an_unstamped_seed_run_is_adopted_into_its_searchs_cell(tmp_path):
    """The driver died after a seed run trained but before it stamped the record (the trainer names the cell
    of the run's own config): the next sweep run adopts it into the search's cell and trains nothing."""
    spec = one_run_spec(tmp_path, "adopt", '[axes]\ntags = [{lr_opt = "0.01"}]\n'
                        'lr = { search = "bracket", grid = [0.005, 0.01, 0.02], seeds = 2 }\n')
    root = tmp_path / "sweeps"
    run_sweep(spec, root, run_fn="hyperp.sweeps.stubs:stub_run")
    sweep = root / "adopt"
    (cell,) = make_plan(loads_spec(spec.read_text())).cells
    seeded = next(r for r in ledger.load_records(sweep).values() if r["seed"] == 1)
    cfg = RunConfig.from_dict(json.loads(seeded["config_json"]))
    assert identity.cell_id(cfg, TAG) != cell  # its own config names another cell
    ledger.write_record(sweep, seeded | {"sweep": None, "cell_id": identity.cell_id(cfg, TAG)})
    again = run_sweep(spec, root, run_fn="hyperp.sweeps.stubs:stub_run")
    assert again.submitted == 0
    rec = ledger.read_record(sweep / "runs" / seeded["run_id"] / schema.RUNS_FILE)
    assert rec["sweep"] == "adopt" and rec["cell_id"] == cell


def test_migrate_renames_optuna_studies_and_trial_run_ids(tmp_path):
    optuna = pytest.importorskip("optuna")
    spec = one_run_spec(tmp_path, "legacy", MIGRATE_BODY)
    sweep, ids = write_legacy_sweep(spec, tmp_path / "sweeps")
    old_run = next(iter(ids))
    old_cell = ledger.read_record(sweep / "runs" / old_run / schema.RUNS_FILE)["cell_id"]
    storage = f"sqlite:///{sweep / schema.OPTUNA_DB}"
    study = optuna.create_study(study_name=f"legacy-{old_cell}", storage=storage)
    trial = study.ask()
    trial.set_user_attr("run_id", old_run)
    study.tell(trial, 1.0)
    ledger.migrate(sweep)
    new_cell = ledger.read_record(sweep / "runs" / ids[old_run] / schema.RUNS_FILE)["cell_id"]
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == [f"legacy-{new_cell}"]
    moved = optuna.load_study(study_name=f"legacy-{new_cell}", storage=storage)
    assert [t.user_attrs["run_id"] for t in moved.trials] == [ids[old_run]]


# ---------------------------------------------------------------- carrying runs over a RESULTS_VERSION bump


def test_a_results_version_bump_carries_over_only_the_configs_it_did_not_change(tmp_path):
    """Records trained by RESULTS_VERSION 1 under its ids: after the bump to 2 (the MLP hidden size rounded up
    to a multiple of 64), the width-32 run at mlp_ratio 4 (hidden 128, unchanged) is carried over to its new
    id, and the one at mlp_ratio 3 (hidden 96 -> 128: a different model) is stale and trained again."""
    assert identity.RESULTS_VERSION >= 2  # the bumps after 2 leave these hyperp configs unchanged
    spec = one_run_spec(tmp_path, "bump", "[axes]\nmlp_ratio = [4.0, 3.0]\n")
    plan = make_plan(loads_spec(spec.read_text()))
    sweep = tmp_path / "sweeps" / "bump"
    fn = resolve_run_fn("hyperp.sweeps.stubs:stub_run")
    old_ids = {}
    for run in plan.runs:
        old = identity.run_id_of_json(run.config.to_json(), TAG, version=1)
        old_ids[run.config.mlp_ratio] = old
        row = schema.config_columns(run.config) | fn(run.config, "") | {
            "run_id": old, "sweep": "bump", "cell_id": "c", "lr_search": "grid", "attempts": 1, "results_version": 1}
        ledger.write_record(sweep, row)
    unchanged, changed = (r for r in sorted(plan.runs, key=lambda r: -r.config.mlp_ratio))
    assert identity.carries_over(unchanged.config, 1) and not identity.carries_over(changed.config, 1)

    res = run_sweep(spec, tmp_path / "sweeps", run_fn="hyperp.sweeps.stubs:stub_run")
    assert res.submitted == 1 and res.counts[schema.COMPLETED] == 2  # only the changed config trained again
    carried = ledger.read_record(sweep / "runs" / unchanged.run_id / schema.RUNS_FILE)
    assert carried["results_version"] == 1 and carried["run_id"] == unchanged.run_id  # provenance kept
    retrained = ledger.read_record(sweep / "runs" / changed.run_id / schema.RUNS_FILE)
    assert retrained["results_version"] == identity.RESULTS_VERSION
    assert (sweep / "runs" / old_ids[3.0]).is_dir()  # the stale record is left on disk, not deleted


def test_readers_never_see_a_torn_ledger_while_a_sweep_rewrites_it(tmp_path):
    """A live sweep replaces runs.parquet atomically while `fit`, `plot` or `status` read it. pyarrow's path
    readers may open the file twice and pair one version's footer with the next one's pages; hyperp's
    readers use one handle, so every read returns a whole version (one of the sizes written)."""
    import threading

    from hyperp.fitting.table import load_table

    path = tmp_path / "runs.parquet"
    sizes = [50 + 20 * i for i in range(40)]
    io.write_parquet(path, pd.DataFrame({"x": range(sizes[0])}))
    stop = threading.Event()

    def rewrite():
        i = 0
        while not stop.is_set():
            io.write_parquet(path, pd.DataFrame({"x": range(sizes[i % len(sizes)]), "s": ["v"] * sizes[i % len(sizes)]}))
            i += 1

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        seen = {len(load_table(tmp_path)) for _ in range(200)} | {io.read_parquet_table(path).num_rows for _ in range(100)}
    finally:
        stop.set()
        writer.join()
    assert seen <= set(sizes)


def test_a_record_older_than_a_config_field_reads_with_its_configs_value():
    """A trainer record written before a config field existed gets the value its run trained with (the config's,
    else the field's default: a field is added with a default that keeps what every config trains to); a command
    sweep's record gets none."""
    old = {"run_id": "a" * 12, "param": "muonh", "config_json": json.dumps({"param": "muonh", "depth": 3})}
    assert schema.normalise(old)["token_rule"] == RunConfig().token_rule
    assert schema.normalise(old)["fused_gate_up"] is False
    given = old | {"config_json": json.dumps({"param": "muonh", "token_rule": "on"})}
    assert schema.normalise(given)["token_rule"] == "on"
    command = {"run_id": "b" * 12, "config_json": json.dumps({"kind": identity.COMMAND_KIND, "template": "x"})}
    assert schema.normalise(command)["token_rule"] is None
    assert schema.normalise(old | {"token_rule": None})["token_rule"] is None  # a written null stays null
