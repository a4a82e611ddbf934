//! The report of a run: `index.html` (self-contained, plots as inline SVG) rendered from the
//! run directory's `results.json`, `history.jsonl` and `nemesis.jsonl`.
