"""Study reports generated from sweep ledgers (`hyperp report SWEEP... -o DIR`).

A report reads each sweep directory and nothing else, and writes nothing inside it (no lock is taken, so a
sweep whose driver is running is reported as it stands). It sits on top of the checks, the fits and the plots
and below the CLI:

- `ledger.py`: a sweep directory read once (spec, plan, state, runs.parquet, curves) and what varies in it
  (the cell columns, the columns that follow one of them, the transfer axes);
- `parts.py`: what the sections share: options, a section's result (`Part`: blocks, verdicts, items reported
  and skipped with the reason), numbers with intervals, verdicts and figures as blocks;
- `sections.py` (spec and protocol, statuses, LR optima, training curves), `verdicts.py` (transfer,
  stability, head) and `fits.py` (loss against compute and CEL, Chinchilla): each section decides from the
  ledger's columns whether it applies and builds its blocks from `hyperp.checks`, `hyperp.fitting` and
  `hyperp.plots`;
- `doc.py`: the blocks and their two renderings: one self-contained HTML page (figures as PNG data URIs,
  inline CSS, no script) and Markdown (figures as PNG files beside it);
- `build.py`: the report of several sweeps, and writing it (atomically, after everything was computed, so
  bad input writes nothing);
- `fill.py`: the report's named tables written into the marked blocks of a Markdown file (`--fill`), the text
  outside them kept byte for byte (results/README.md's tables come from it).
"""
