"""aep_lib.report.gallery: outputs/<profile>/index.html, checked as HTML and in a real browser (headless Chromium).

The gallery is built from a small synthetic set of figure records (PNGs drawn with matplotlib here), by the
same call that writes index.md (``figure_index.render_index``); no notebook runs. The browser test needs
Debian's ``chromium`` (``.ci/run`` installs it) and skips, saying why, where none is installed. Set
``AEP_GALLERY_SCREENSHOT=/some/file.png`` to keep a copy of its screenshot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from aep_lib.report import figure_index, gallery  # noqa: E402

FIGURES = ["fig_convergence", "fig_scatter", "fig_roc"]


def _record(name: str, claims: list[dict], numbers: dict, run_ids: list[str]) -> dict:
    return {"name": name, "caption": f"Caption of {name}: what it shows, in one sentence.", "numbers": numbers,
            "run_ids": run_ids, "claims": claims, "notebook": "t_nb", "params_file": "params/cpu/t_nb.yaml",
            "execution": "e1", "profile": "cpu", "git_sha": "0123abcd+dirty",
            "versions": {"torch": "2.13.0+cpu", "transformers": "5.24.0"}, "time": "2026-12-02T04:00:00+00:00"}


def _claim(name, value, holds, at_least=None, at_most=None):
    return {"name": name, "value": value, "shown": f"{value:.2f}", "at_least": at_least, "at_most": at_most,
            "holds": holds}


@pytest.fixture
def out_dir(tmp_path):
    """outputs/cpu/ with three figures (one with a claim that fails), one token view, one executed notebook."""
    out = tmp_path / "cpu"
    (out / "figures").mkdir(parents=True)
    for i, name in enumerate(FIGURES):
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(range(10), [x ** (i + 1) for x in range(10)], label=name)
        ax.set_title(name)
        fig.savefig(out / "figures" / f"{name}.png", dpi=80)
        plt.close(fig)
    (out / "figures" / "t_tokenview.html").write_text("<!DOCTYPE html><html><body>tokens</body></html>")
    (out / "t_nb.ipynb").write_text("{}")
    records = [
        _record("fig_convergence", [_claim("share within 2σ", 0.95, True, at_least=0.9),
                                    _claim("mean z", 0.1, True)], {"share": 0.95, "n": 64},
                [f"run{i}" for i in range(8)]),
        _record("fig_scatter", [_claim("AUROC", 0.41, False, at_least=0.8)], {"auroc": 0.41}, ["run9"]),
        _record("fig_roc", [], {f"detector_{i}": i / 20 for i in range(20)}, []),
    ]
    state = {
        "t_nb": {"name": "t_nb", "notebook": "t_nb", "params_file": "params/cpu/t_nb.yaml",
                 "output": str(out / "t_nb.ipynb"), "status": "failed", "cell": None,
                 "error": "claim 'AUROC' = 0.41 does not hold (>= 0.8)", "seconds": 3.2,
                 "time": "2026-12-02T04:00:00+00:00", "figures": records, "token_views": ["t_tokenview"]},
        "t_broken": {"name": "t_broken", "notebook": "t_broken", "params_file": "params/cpu/t_broken.yaml",
                     "output": str(out / "t_broken.ipynb"), "status": "failed",
                     "cell": "cell 4 (In [3]) `plot(x)`", "error": "ValueError: boom", "seconds": 1.0,
                     "time": "2026-12-02T04:00:00+00:00", "figures": [], "token_views": []},
    }
    figure_index.render_index(out, state)
    return out


def test_one_card_per_figure_with_what_it_claims(out_dir):
    page = (out_dir / "index.html").read_text()
    assert (out_dir / "index.md").is_file()  # written by the same call
    assert re.findall(r'data-figure="([^"]+)"', page) == FIGURES
    for name in FIGURES:
        assert f'<img src="figures/{name}.png"' in page and f"Caption of {name}" in page
    card = page[page.index('data-figure="fig_scatter"'):page.index('data-figure="fig_roc"')]
    assert 'class="card failing"' in page[page.rindex("<article", 0, page.index('data-figure="fig_scatter"')):]
    assert "1 of 1 claims FAIL" in card and '<tr class="claim-fail"><td>FAIL</td><td>AUROC</td>' in card
    first = page[page.index('data-figure="fig_convergence"'):page.index('data-figure="fig_scatter"')]
    assert "1 of 1 claims hold" in first and "observed, no bound (1)" in first
    assert "+3 more" in first  # 8 run ids: 5 shown
    assert '<a href="t_nb.ipynb">t_nb.ipynb</a>' in first and 'href="figures/t_tokenview.html"' in first
    assert "params/cpu/t_nb.yaml" in first and "0123abcd+dirty" in first and "torch 2.13.0+cpu" in first
    roc = page[page.index('data-figure="fig_roc"'):]
    assert "<details class=\"numbers\"><summary>numbers (20)</summary>" in roc  # many numbers: folded
    assert "claims: 1 of 2 hold, <span class=\"fail\">1 FAIL</span>" in page
    # a failed execution without figures is listed with the cell it failed in
    assert "in cell 4 (In [3]) `plot(x)`: " in page and "t_broken.ipynb (not written)" not in page


def test_the_page_is_self_contained(out_dir):
    page = (out_dir / "index.html").read_text()
    assert "<script" not in page and "@import" not in page and "url(" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    for target in re.findall(r'(?:src|href)="([^"#]+)"', page):
        assert (out_dir / target).is_file(), target


# --- in a browser ------------------------------------------------------------------------------------

# Appended to a copy of the page (same folder, so the relative image links resolve the same): after the
# load event, every <img> and card as JSON in a <pre>, which --dump-dom prints.
CHECK = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({src: i.getAttribute("src"), complete: i.complete,
                                                 width: i.naturalWidth}));
  const cards = [...document.querySelectorAll("article.card")].map(c => c.dataset.figure);
  const failing = [...document.querySelectorAll("article.card.failing")].map(c => c.dataset.figure);
  const pre = document.createElement("pre");
  pre.id = "aep-check";
  pre.textContent = JSON.stringify({images, cards, failing, width: document.documentElement.scrollWidth,
                                    viewport: window.innerWidth});
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def _headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Chromium's own headless mode; --no-sandbox because CI runs as root."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={profile}", "--window-size=1366,900", "--virtual-time-budget=10000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _check(browser: str, out_dir: Path, tmp_path: Path) -> dict:
    """What Chromium saw of ``out_dir/index.html``: a copy with the CHECK script, in ``tmp_path``, whose
    ``<base>`` points back at ``out_dir`` so that the relative links resolve as in the page itself."""
    page = (out_dir / "index.html").read_text()
    base = f'<head><base href="{out_dir.resolve().as_uri()}/">'
    check = tmp_path / "index_check.html"
    check.write_text(page.replace("<head>", base, 1).replace("</body>", CHECK + "</body>"), encoding="utf-8")
    done = _headless(browser, tmp_path / "profile", "--dump-dom", check.as_uri())
    found = re.search(r'<pre id="aep-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no check output from {browser}: {done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


NO_CHROMIUM = "no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"


@pytest.mark.skipif(_chromium() is None, reason=NO_CHROMIUM)
def test_gallery_in_headless_chromium(out_dir, tmp_path):
    browser = _chromium()
    seen = _check(browser, out_dir, tmp_path)
    assert seen["cards"] == FIGURES and seen["failing"] == ["fig_scatter"]
    assert [i["src"] for i in seen["images"]] == [f"figures/{n}.png" for n in FIGURES]
    assert all(i["complete"] and i["width"] > 0 for i in seen["images"]), seen["images"]
    assert seen["width"] <= seen["viewport"]  # nothing wider than a laptop screen: no sideways scrolling

    shot = tmp_path / "gallery.png"
    done = _headless(browser, tmp_path / "profile", f"--screenshot={shot}", (out_dir / "index.html").as_uri())
    assert shot.is_file() and shot.stat().st_size > 10_000, done.stderr[-2000:]
    if keep := os.environ.get("AEP_GALLERY_SCREENSHOT"):
        shutil.copyfile(shot, keep)

    # the check sees a figure that is missing: its image does not load
    (out_dir / "figures" / "fig_roc.png").unlink()
    seen = _check(browser, out_dir, tmp_path)
    assert [i["width"] > 0 for i in seen["images"]] == [True, True, False]


@pytest.mark.skipif(_chromium() is None, reason=NO_CHROMIUM)
def test_the_profile_gallery_in_headless_chromium(tmp_path):
    """outputs/cpu/index.html, where ``make figures`` (or ``aep figures --index-only``) wrote one."""
    from aep_lib import paths

    out = paths.output_dir("cpu")
    if not (out / "index.html").is_file():
        pytest.skip(f"no {out / 'index.html'}: run make figures first")
    page = (out / "index.html").read_text()
    seen = _check(_chromium(), out, tmp_path)
    assert seen["cards"] == re.findall(r'data-figure="([^"]+)"', page) and seen["cards"]
    assert len(seen["images"]) == len(seen["cards"])
    missing = [i["src"] for i in seen["images"] if not (i["complete"] and i["width"] > 0)]
    assert not missing, f"figures that did not load: {missing}"


def test_claim_verdicts():
    assert gallery.claim_verdict(_claim("a", 1.0, True, at_least=0.5)) == "ok"
    assert gallery.claim_verdict(_claim("a", 0.1, False, at_least=0.5)) == "FAIL"
    assert gallery.claim_verdict(_claim("a", 0.1, True)) == "observed"


# --- figures a reader can read (aep_lib.report.plots) -------------------------------------------------------


def test_log_axis_labels_plain_numbers_and_no_minor_labels():
    from aep_lib.report import plots

    fig, (a, b) = plt.subplots(1, 2)
    a.plot([16, 32, 64], [0.5, 0.7, 0.9])
    plots.log_axis(a, [16, 32, 64])  # less than a decade: matplotlib alone labels 2×10¹, 3×10¹, ... too
    b.plot([1, 256], [1, 2])
    plots.log_axis(b)
    fig.canvas.draw()
    assert [t.get_text() for t in a.get_xticklabels()] == ["16", "32", "64"]
    assert [t.get_text() for t in b.get_xticklabels() if b.get_xlim()[0] <= t.get_position()[0] <= b.get_xlim()[1]] \
        == ["1", "10", "100"]
    for ax in (a, b):
        assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))
    plt.close(fig)
