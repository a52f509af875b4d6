"""``benchmarks/asv_table.py``: benchmarks/README.md's table comes from asv's
stored results (a results file written here in asv's format)."""
from __future__ import annotations

import itertools
import json

import pytest

from benchmarks import asv_table
from nbnorm._bench import write_between

PARAMS = [["'nchw'", "'nhwc'"], ["'float32'", "'float64'"], ["'small'", "'large'"],
          ["'cpu'", "'cuda'"], ["'nbnorm'", "'numpy'", "'torch'"]]
COLUMNS = ["result", "params", "version", "stats_q_25", "stats_q_75"]


def _results(tmp_path, commit, date, seconds):
    """A results file whose ``bench_ops`` entries hold ``seconds(params)`` (None:
    not run), quartiles at ±5 %."""
    results = {}
    for _, bench in asv_table.OPS:
        values = [seconds(dict(zip(["layout", "dtype", "size", "backend", "impl"],
                                   (v.strip("'") for v in combo))))
                  for combo in itertools.product(*PARAMS)]
        results[bench] = [values, PARAMS, "v1",
                          [None if v is None else v * 0.95 for v in values],
                          [None if v is None else v * 1.05 for v in values]]
    folder = tmp_path / "results" / "box"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "machine.json").write_text("{}")
    data = {"commit_hash": commit, "date": date, "result_columns": COLUMNS,
            "results": results, "params": {"machine": "box", "cpu": "CPU X", "num_cpu": "2",
                                           "ram": str(16 * 2**30), "python": "3.11"}}
    (folder / f"{commit[:8]}-env.json").write_text(json.dumps(data))
    return tmp_path / "results"


def _speed(p):
    if p["impl"] == "torch":
        return None
    base = 0.002 if p["layout"] == "nchw" else 0.003
    return base * (10 if p["impl"] == "numpy" else 1) * (2 if p["dtype"] == "float64" else 1)


def test_table_rows_come_from_the_results(tmp_path):
    folder = _results(tmp_path, "a" * 40, 1, _speed)
    text = asv_table.table(asv_table.load(str(folder)))
    assert "commit `aaaaaaaa` on `box` (CPU X, 2 cores, 16 GiB)" in text
    rows = [r for r in text.splitlines() if r.startswith("| `")]
    assert len(rows) == len(asv_table.OPS) * len(asv_table.LAYOUTS)
    assert rows[0] == ("| `moments` | NCHW | **2.00 (1.90–2.10)** | 20.0 (19.0–21.0) | n/a "
                       "| 10.0× | n/a |")
    assert rows[1].startswith("| `moments` | channels-last | **3.00 (2.85–3.15)** | 30.0")


def test_the_newest_results_of_a_commit_are_used(tmp_path):
    _results(tmp_path, "b" * 40, 5, lambda p: 0.001)
    folder = _results(tmp_path, "c" * 40, 9, lambda p: 0.004)
    assert asv_table.load(str(folder))["commit_hash"] == "c" * 40
    assert "**1.00 (" in asv_table.table(asv_table.load(str(folder), "bbbb"))
    with pytest.raises(FileNotFoundError, match="commit dddd"):
        asv_table.load(str(folder), "dddd")


def test_the_table_replaces_what_lies_between_the_markers(tmp_path):
    folder = _results(tmp_path, "e" * 40, 1, _speed)
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- asv-table:start -->\nold\n<!-- asv-table:end -->\nafter\n")
    write_between(str(readme), "asv-table", asv_table.table(asv_table.load(str(folder))))
    text = readme.read_text()
    assert "old" not in text and text.startswith("before\n") and text.endswith("after\n")
    assert "**2.00 (1.90–2.10)**" in text
