"""Make a published asv dashboard self-contained (no CDN, no internet).

asv's ``index.html`` loads jQuery, flot (+ time, selection, categories,
orderBars), stupidtable, blueimp-md5 and Bootstrap from public CDNs; opened
where those cannot be reached (an HPC login node, an air-gapped lab) it
redirects to its "external (JavaScript) dependencies failed to load" page.
This rewrites every such ``<script>``/``<link>`` of the published HTML to a
copy of a pinned version vendored in ``benchmarks/dashboard/vendor`` (from
the npm registry, with its licence), copied next to the HTML, with the
``integrity`` attribute recomputed from that copy (sha384)::

    python -m benchmarks.dashboard.offline .asv/html

``benchmarks/publish.sh`` runs ``asv publish`` and then this.  A reference
that is not in :data:`VENDORED` is an error (a new asv version added a
dependency): the page would otherwise still depend on the internet.
"""
from __future__ import annotations

import base64
import hashlib
import re
import shutil
import sys
from pathlib import Path

VENDOR = Path(__file__).resolve().parent / "vendor"

#: the tail of each CDN address asv 0.6 uses → the vendored file (npm package
#: and version in the folder name; flot 0.8.3's npm package ships the
#: unminified sources of the files the CDN serves minified, and npm has
#: stupid-table-plugin 1.1.3, not the CDN's 1.0.1 — same API)
VENDORED = {
    "jquery-3.3.1.min.js": "jquery-3.3.1/jquery.min.js",
    "flot/0.8.3/jquery.flot.min.js": "flot-0.8.3/jquery.flot.js",
    "flot/0.8.3/jquery.flot.time.min.js": "flot-0.8.3/jquery.flot.time.js",
    "flot/0.8.3/jquery.flot.selection.min.js": "flot-0.8.3/jquery.flot.selection.js",
    "flot/0.8.3/jquery.flot.categories.min.js": "flot-0.8.3/jquery.flot.categories.js",
    "flot-orderbars@1.0.0/js/jquery.flot.orderBars.js":
        "flot-orderbars-1.0.0/jquery.flot.orderBars.js",
    "stupidtable/1.0.1/stupidtable.min.js": "stupid-table-plugin-1.1.3/stupidtable.min.js",
    "blueimp-md5/2.19.0/js/md5.min.js": "blueimp-md5-2.19.0/md5.min.js",
    "bootstrap@3.1.1/dist/js/bootstrap.min.js": "bootstrap-3.1.1/js/bootstrap.min.js",
    "bootstrap@3.1.1/dist/css/bootstrap.min.css": "bootstrap-3.1.1/css/bootstrap.min.css",
}

_TAG = re.compile(r"<(script|link)\b[^>]*>", re.IGNORECASE)
_URL = re.compile(r'\b(src|href)="(https?://[^"]+)"')


def integrity(path):
    """The ``integrity`` value of a file: ``sha384-<base64 digest>``."""
    digest = hashlib.sha384(Path(path).read_bytes()).digest()
    return "sha384-" + base64.b64encode(digest).decode()


def _local(url):
    for tail, rel in VENDORED.items():
        if url.endswith(tail):
            return rel
    return None


def _rewrite_tag(tag, missing):
    m = _URL.search(tag)
    if not m:
        return tag
    rel = _local(m.group(2))
    if rel is None:
        missing.append(m.group(2))
        return tag
    tag = tag.replace(m.group(0), f'{m.group(1)}="vendor/{rel}"')
    tag = re.sub(r'\s(crossorigin|referrerpolicy)="[^"]*"', "", tag)
    value = integrity(VENDOR / rel)
    if re.search(r'\sintegrity="[^"]*"', tag):
        return re.sub(r'\sintegrity="[^"]*"', f' integrity="{value}"', tag)
    return tag.replace(f'{m.group(1)}="vendor/{rel}"',
                       f'{m.group(1)}="vendor/{rel}" integrity="{value}"')


def make_offline(html_dir):
    """Rewrite every HTML page of ``html_dir``; returns the pages changed.
    Raises ValueError naming any script or stylesheet still loaded from the
    internet."""
    html_dir = Path(html_dir)
    if not (html_dir / "index.html").is_file():
        raise ValueError(f"html_dir: {html_dir} holds no index.html (run asv publish first)")
    shutil.copytree(VENDOR, html_dir / "vendor", dirs_exist_ok=True)
    changed, missing = [], []
    for page in sorted(html_dir.glob("*.html")):
        text = page.read_text(encoding="utf-8")
        new = _TAG.sub(lambda m: _rewrite_tag(m.group(0), missing), text)
        if new != text:
            page.write_text(new, encoding="utf-8")
            changed.append(page.name)
    if missing:
        raise ValueError("scripts/stylesheets with no vendored copy (add them to "
                         f"benchmarks/dashboard/vendor and VENDORED): {sorted(set(missing))}")
    return changed


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else ".asv/html"
    pages = make_offline(target)
    print(f"offline dashboard: {', '.join(pages) or 'nothing to change'} in {target} now load "
          f"their scripts and styles from {target}/vendor")
