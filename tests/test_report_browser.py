"""The report in a real headless browser (Chromium from the OS packages): it loads and shows every figure.

Skipped where Chromium is not installed (Debian/Ubuntu: ``apt-get install chromium``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
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


def _probed(chromium: str, run: Path, tmp_path: Path, probe_script: str, *args: str):
    """The JSON a probe script leaves in the report's DOM (#probe) once the page has loaded in Chromium."""
    html = (run / "report.html").read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", probe_script + "</body>"), encoding="utf-8")
    dom = _browse(chromium, tmp_path, *args, "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the page did not finish loading (no probe output in the DOM)"
    return json.loads(found.group(1).replace("&quot;", '"'))


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
  document.querySelectorAll("details").forEach(d => { d.open = true; });  // the folded leaderboards too
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
    m = _probed(chromium, rf.built_run(tmp_path_factory), tmp_path, WIDTH_PROBE, "--window-size=1280,2000")
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


# After load: where the contents sit, whether every link of theirs has a target, which <details> are open, and what
# following one link does (the page scrolls its target to the top; the report itself has no script for it).
NAV_PROBE = """<script>
window.addEventListener("load", () => {
  const nav = document.querySelector("nav.toc");
  const links = [...nav.querySelectorAll("a")].map(a => a.getAttribute("href"));
  const missing = links.filter(h => !h.startsWith("#") || !document.getElementById(h.slice(1)));
  const details = [...document.querySelectorAll("details")].map(d => ({id: d.id, open: d.open,
    height: d.getBoundingClientRect().height, summary: d.querySelector("summary").getBoundingClientRect().height,
    shown: [...d.children].filter(c => c.tagName !== "SUMMARY").map(c => c.checkVisibility())}));
  const r = nav.getBoundingClientRect();
  const target = details.length ? details[details.length - 1].id : "leaderboard";
  location.hash = "#" + target;
  const top = document.getElementById(target).getBoundingClientRect().top;
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({inner: window.innerWidth, height: window.innerHeight,
    page: document.documentElement.scrollWidth, links, missing, details, nav: [r.top, r.bottom, r.right],
    scrolled: window.scrollY, target_top: top, h1: document.querySelector("h1").getBoundingClientRect().top});
  document.body.appendChild(out);
});
</script>"""


def test_contents_link_every_section_and_set_and_leaderboards_start_folded(chromium, tmp_path_factory, tmp_path):
    """At 1280 x 800 the contents are on the first screen, every link of theirs has its target in the DOM, each
    set's leaderboard is a closed <details> (its table takes no room until opened), and a contents link brings its
    target to the top of the window."""
    run = rf.built_run(tmp_path_factory)
    m = _probed(chromium, run, tmp_path, NAV_PROBE, "--window-size=1280,800")
    assert m["inner"] == 1280 and m["page"] <= m["inner"]
    assert not m["missing"], m["missing"]
    sets = {f"#{d['id']}" for d in m["details"]}
    assert len(m["details"]) == len(rf.EQUATIONS) and sets <= set(m["links"])  # every set is in the contents
    assert {"#leaderboard", "#summary-by-set-family", "#failed-cells", "#forum4x4"} <= set(m["links"])
    for d in m["details"]:
        assert not d["open"] and d["summary"] > 0 and d["height"] < d["summary"] + 10, d  # folded: one line high
        assert d["shown"] and not any(d["shown"]), d  # its note and table are not rendered
    top, bottom, right = m["nav"]
    assert 0 < top and bottom <= m["height"] and right <= m["inner"]  # the whole contents on the first screen
    assert m["scrolled"] > 0 and abs(m["target_top"]) <= 2  # a link scrolls its target to the top


def test_first_screen_at_laptop_size(chromium, tmp_path_factory, tmp_path):
    """A screenshot of what a reader sees first at 1280 x 800: title, introduction, definition and contents, not a
    blank or a half-drawn page. A copy goes to /tmp/report_first_screen.png for a person to look at."""
    run = rf.built_run(tmp_path_factory)
    shot = tmp_path / "first_screen.png"
    _browse(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,800", (run / "report.html").as_uri())
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 800)
    shutil.copy(shot, Path(tempfile.gettempdir()) / "report_first_screen.png")
    gray = np.asarray(img.convert("L"), dtype=float)
    rows = (gray < 128).mean(axis=1)  # share of dark (text) pixels per pixel row
    assert (rows > 0.01).sum() > 200  # many lines of text
    assert rows[600:].max() > 0.01  # ... down to the bottom of the screen: the first screen is filled
    link_blue = np.asarray(img)[..., 2].astype(int) - np.asarray(img)[..., 0].astype(int) > 100
    assert link_blue.sum() > 2000  # the contents' links are on it
