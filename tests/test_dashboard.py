"""The published asv dashboard renders in a real browser without internet.

A small results set (every benchmark of ``tests/data/asv_results/benchmarks.json``
— the suite's own list — with synthetic timings for the checkout's last two
commits: the test is about rendering, not the numbers) is published with
``asv publish``, made self-contained by ``benchmarks.dashboard.offline``,
served on 127.0.0.1 and opened in headless Chromium whose resolver maps every
other host to nowhere (as on a machine without internet).  The page must not
redirect to asv's "external (JavaScript) dependencies failed to load" page,
the grid must list every benchmark module, and a benchmark's graph must draw
(flot series with points, coloured pixels on its canvas).  A screenshot is
saved and its path printed.

Skips, saying why, without asv, selenium, Chromium/ChromeDriver (Debian:
``apt-get install chromium chromium-driver``) or git history.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from browser import served, wait

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "asv_results" / "benchmarks.json"
COLUMNS = ["result", "params", "version", "started_at", "duration", "stats_ci_99_a",
           "stats_ci_99_b", "stats_q_25", "stats_q_75", "stats_number", "stats_repeat",
           "samples", "profile"]
MACHINE = {"arch": "x86_64", "cpu": "test cpu", "machine": "dashboard-test", "num_cpu": "2",
           "os": "Linux", "ram": "1000000000", "version": 1}


def _commits():
    try:
        out = subprocess.run(["git", "rev-list", "--first-parent", "-n", "2", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return []
    return out[::-1]


def _write_results(results_dir, commits):
    """Synthetic results of every benchmark (all parameter combinations) for
    ``commits`` on one machine, in asv's results format (version 2)."""
    benchmarks = json.loads(FIXTURE.read_text())
    shutil.copy(FIXTURE, results_dir / "benchmarks.json")
    machine_dir = results_dir / MACHINE["machine"]
    machine_dir.mkdir()
    (machine_dir / "machine.json").write_text(json.dumps(MACHINE))
    for i, commit in enumerate(commits):
        results = {}
        for name, bench in benchmarks.items():
            if name == "version":
                continue
            n = math.prod(len(p) for p in bench["params"]) if bench["params"] else 1
            values = [1e-3 * (1 + 0.1 * i + 0.01 * (j % 7)) for j in range(n)]
            results[name] = [values if bench["params"] else values[0], bench["params"],
                             bench["version"], 1_700_000_000_000 + i, 1.0]
        data = {"commit_hash": commit, "env_name": "virtualenv-py3.11",
                "date": 1_700_000_000_000 + 86_400_000 * i,
                "params": {**{k: v for k, v in MACHINE.items() if k != "version"},
                           "python": "3.11"},
                "python": "3.11", "requirements": {}, "env_vars": {},
                "result_columns": COLUMNS, "results": results, "durations": {}, "version": 2}
        (machine_dir / f"{commit[:8]}-virtualenv-py3.11.json").write_text(json.dumps(data))
    return sorted({name.split(".")[0] for name in benchmarks if name != "version"})


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    pytest.importorskip("asv", reason="asv is not installed (pip install asv)")
    commits = _commits()
    if len(commits) < 2:
        pytest.skip("needs a git checkout with at least two commits")
    tmp = tmp_path_factory.mktemp("dashboard")
    (tmp / "results").mkdir()
    modules = _write_results(tmp / "results", commits)
    conf = {"version": 1, "project": "nbnorm", "repo": str(ROOT), "dvcs": "git",
            "branches": [subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=ROOT,
                                        capture_output=True, text=True).stdout.strip()],
            "environment_type": "virtualenv", "benchmark_dir": str(ROOT / "benchmarks"),
            "results_dir": str(tmp / "results"), "html_dir": str(tmp / "html"),
            "env_dir": str(tmp / "env")}
    (tmp / "asv.conf.json").write_text(json.dumps(conf))
    run = subprocess.run([sys.executable, "-m", "asv", "publish", "--config",
                          str(tmp / "asv.conf.json")], cwd=tmp, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    from benchmarks.dashboard.offline import make_offline
    assert "index.html" in make_offline(tmp / "html")
    return tmp / "html", modules


def test_no_page_loads_anything_from_the_internet(dashboard):
    html, _ = dashboard
    for page in html.glob("*.html"):
        text = page.read_text()
        for tag in ("<script", "<link"):
            for piece in text.split(tag)[1:]:
                head = piece.split(">", 1)[0]
                assert "http://" not in head and "https://" not in head, (page.name, head)


@pytest.fixture(scope="module")
def browser(dashboard):
    html, modules = dashboard
    with served(html) as (driver, base):
        yield driver, base, modules


def test_grid_lists_every_benchmark_module_offline(browser):
    driver, base, modules = browser
    driver.get(base + "/index.html")
    ids = wait(driver, "var g = document.querySelectorAll('[id^=\"group-\"]');"
                        "return g.length ? Array.from(g).map(e => e.id) : null;")
    assert "error.html" not in driver.current_url, driver.current_url
    assert "swallow" not in driver.execute_script("return document.body.innerText")
    assert sorted(i[len("group-"):] for i in ids) == modules


def test_a_benchmark_graph_draws(browser):
    driver, base, _ = browser
    driver.get(base + "/index.html#bench_ops.Moments.time_moments")
    points = wait(driver, """
        var n = 0;
        $('.flot-base').each(function () {
            var plot = $(this).parent().data('plot');
            if (plot) plot.getData().forEach(function (s) {
                s.data.forEach(function (p) { if (p[1] !== null && isFinite(p[1])) n++; });
            });
        });
        return n;""")
    assert "error.html" not in driver.current_url, driver.current_url
    assert points >= 2, "no plotted points"
    coloured = driver.execute_script("""
        var c = document.querySelector('canvas.flot-base');
        var d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, n = 0;
        for (var i = 0; i < d.length; i += 4)
            if (d[i + 3] > 0 && !(d[i] === d[i + 1] && d[i + 1] === d[i + 2])) n++;
        return n;""")
    shot = Path(os.environ.get("NBNORM_ARTIFACTS", ROOT / ".artifacts")) / "dashboard.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(shot))
    print(f"\ndashboard screenshot: {shot}")
    assert coloured > 100, f"the graph's canvas has {coloured} coloured pixels (screenshot {shot})"


def test_unrewritten_dashboard_fails_offline(browser, dashboard, tmp_path):
    """The check above can fail: the same dashboard before the rewrite, with
    its CDN scripts unreachable, ends on asv's error page."""
    driver, base, _ = browser
    html, _ = dashboard
    original = html / "index.html"
    saved = original.read_text()
    cdn = saved
    for line in saved.splitlines():
        if 'src="vendor/jquery-3.3.1/jquery.min.js"' in line:
            cdn = saved.replace(line, line.replace("vendor/jquery-3.3.1/jquery.min.js",
                                                   "https://code.jquery.com/jquery-3.3.1.min.js"))
    assert cdn != saved
    try:
        original.write_text(cdn)
        driver.get(base + "/index.html")
        url = wait(driver, "return location.href.indexOf('error.html') >= 0 ? location.href "
                            ": null;", timeout=20)
        assert url and "error.html" in url
    finally:
        original.write_text(saved)
