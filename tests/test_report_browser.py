"""The report in a real headless browser (Chromium from the OS packages): it loads and shows every figure.

Skipped where Chromium is not installed (Debian/Ubuntu: ``apt-get install chromium``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import report_fixtures as rf
from PIL import Image

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--hide-scrollbars", "--virtual-time-budget=10000",
]  # fmt: skip
# Appended to a copy of the report (the report itself has no scripts): after load, write each image's state
# into the DOM, which --dump-dom then prints.
PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify([...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]));
  document.body.appendChild(out);
});
</script>"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    return path


def _browse(chromium: str, tmp_path: Path, *args: str) -> str:
    profile = tmp_path / "profile"
    cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_every_image_loads_in_chromium(chromium, tmp_path_factory, tmp_path):
    run = rf.built_run(tmp_path_factory)
    html = (run / "report.html").read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _browse(chromium, tmp_path, "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the page did not finish loading (no probe output in the DOM)"
    images = json.loads(found.group(1))
    assert len(images) == html.count("<img") == 15  # the figures of tests/test_report.py FIGURES
    for complete, width, height in images:
        assert complete and width > 0 and height > 0
    assert "Leaderboard" in dom and "Failed cells" in dom


# After load, scroll every table box to its right end and record where the page and the last header cell end.
WIDTH_PROBE = """<script>
window.addEventListener("load", () => {
  const boxes = [...document.querySelectorAll("div.scroll")].map(box => {
    box.scrollLeft = box.scrollWidth;
    const last = box.querySelector("thead th:last-child").getBoundingClientRect();
    const first = box.querySelector("tbody td:first-child").getBoundingClientRect();
    const r = box.getBoundingClientRect();
    return {overflow: getComputedStyle(box).overflowX, box_left: r.left, box_right: r.right,
            scroll: box.scrollWidth, client: box.clientWidth, last_right: last.right, first_left: first.left};
  });
  const captions = [...document.querySelectorAll(".caption, caption")].map(c => c.getBoundingClientRect().right);
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({inner: window.innerWidth, page: document.documentElement.scrollWidth, boxes,
                                   captions});
  document.body.appendChild(out);
});
</script>"""


def test_wide_tables_scroll_inside_a_laptop_window(chromium, tmp_path_factory, tmp_path):
    """At 1280 px the page is no wider than the window; every table that is wider scrolls in its own box until its
    last column is in view, with its first column (the architecture) still in view; every caption (footnotes
    included) is readable without scrolling."""
    run = rf.built_run(tmp_path_factory)
    html = (run / "report.html").read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", WIDTH_PROBE + "</body>"), encoding="utf-8")
    dom = _browse(chromium, tmp_path, "--window-size=1280,2000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the page did not finish loading (no probe output in the DOM)"
    m = json.loads(found.group(1).replace("&quot;", '"'))
    assert m["inner"] == 1280 and m["page"] <= m["inner"]  # nothing widens the page itself
    wide = [b for b in m["boxes"] if b["scroll"] > b["client"]]
    assert wide, "the leaderboard should be wider than a laptop window at this size"
    for b in m["boxes"]:
        assert b["overflow"] == "auto" and b["box_right"] <= m["inner"]
        assert b["last_right"] <= b["box_right"] + 1  # scrolled to the end, the last column is visible
        assert b["first_left"] >= b["box_left"] - 1  # ... and so is the first: which row is which
    assert m["captions"] and max(m["captions"]) <= m["inner"]


def test_screenshot_is_not_blank(chromium, tmp_path_factory, tmp_path):
    run = rf.built_run(tmp_path_factory)
    shot = tmp_path / "shot.png"
    _browse(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", (run / "report.html").as_uri())
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 2400)
    colors = img.getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # text, tables and a figure, not a blank page
