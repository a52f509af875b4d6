"""The documentation site builds without a warning and renders in a real browser.

``python -m sphinx -W -b html docs <tmp>`` (warnings are errors: a broken
cross-reference, a malformed docstring or a missing page fails it) builds the
site; headless Chromium, with every host but 127.0.0.1 unreachable, opens the
API page, which must link every public name of ``nbnorm`` to a page showing
its signature, and the guide pages reached from the index.  The README's tour
and the index page's example run as written, and the README stays short.

Skips, saying why, without Sphinx and its extensions (``pip install
".[docs]"``), selenium or Chromium/ChromeDriver.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nbnorm
from browser import served

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = [n for n in nbnorm.__all__ if n not in ("__version__", "AxisError")]
DOC_MODULES = ("sphinx", "pydata_sphinx_theme", "numpydoc", "myst_parser")


def _python_block(path, heading):
    text = path.read_text()
    m = re.search(re.escape(heading) + r".*?```python\n(.*?)```", text, re.S)
    assert m, f"{path.name}: no python block after {heading!r}"
    return m.group(1)


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


def test_readme_is_short_and_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    assert blocks[0].strip() == "pip install . && python -m nbnorm"
    assert blocks[1].strip() == 'pip install ".[test,cuda13]" && python -m pytest'
    assert blocks[1].strip() in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("page,heading", [("README.md", "## A tour"), ("docs/index.md", "# nbnorm")])
def test_tour_runs_as_written(page, heading):
    run = _run(_python_block(ROOT / page, heading))
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    for mod in DOC_MODULES:
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not installed (pip install \".[docs]\")")
    out = tmp_path_factory.mktemp("docs") / "html"
    run = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                          "html", "docs", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return out


def test_no_page_loads_anything_from_the_internet(site):
    pages = list(site.rglob("*.html"))
    assert len(pages) > len(PUBLIC)
    for page in pages:
        for tag in ("<script", "<link"):
            for piece in page.read_text().split(tag)[1:]:
                head = piece.split(">", 1)[0]
                assert "http://" not in head and "https://" not in head, (page.name, head)


@pytest.fixture(scope="module")
def browser(site):
    with served(site) as (driver, base):
        yield driver, base


def _article(driver, timeout=20):
    """The rendered text of the page's main article (polled: the page may
    still be loading when ``get`` returns)."""
    end = time.monotonic() + timeout
    while True:
        text = driver.execute_script("var a = document.querySelector('article');"
                                     "return a ? a.innerText : '';")
        if text or time.monotonic() > end:
            return text
        time.sleep(0.2)


def _links(driver):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('article a[href]'))"
        ".map(a => [a.textContent.trim(), a.href]);")


def test_api_page_lists_every_public_name(browser):
    driver, base = browser
    driver.get(base + "/api.html")
    assert "API reference" in driver.title
    links = {}
    for text, href in _links(driver):    # the link of each name to its own page
        if href.split("#")[0].endswith(f"/generated/nbnorm.{text}.html"):
            links[text] = href
    missing = [n for n in PUBLIC if n not in links]
    assert not missing, f"not on the API page: {missing}"
    for name in PUBLIC:
        driver.get(links[name])
        text = _article(driver)
        assert text, (name, links[name])
        assert f"nbnorm.{name}" in text, name
        doc = getattr(nbnorm, name).__doc__.strip().splitlines()[0]
        words = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc).replace("``", "")
        words = " ".join(re.sub(r"\W+", " ", words).split()[:4])
        assert words in " ".join(re.sub(r"\W+", " ", text).split()), (name, words)


def test_every_page_is_reachable_from_the_index(browser, site):
    driver, base = browser
    driver.get(base + "/index.html")
    hrefs = {h.split("#")[0] for _, h in _links(driver)}
    wanted = {p.relative_to(ROOT / "docs").with_suffix(".html").as_posix()
              for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts} - {"index.html"}
    assert wanted <= {h[len(base) + 1:] for h in hrefs if h.startswith(base)}, wanted
    for page in sorted(wanted):
        driver.get(f"{base}/{page}")
        assert "404" not in driver.title and _article(driver), page
