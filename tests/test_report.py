import base64
import re
import shutil
import subprocess

import pytest
from matplotlib.image import imread
from run_folders import clustered_features, fake_run

from tks.cli import main
from tks.compare import read_runs
from tks.report import build_report

CHROMIUM = shutil.which("chromium")
HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # without these it waits for the network on an offline machine
    "--disable-component-update",
    "--disable-sync",
]
# Appended to a copy of the page: once loaded, writes each image's decoded size into the DOM for --dump-dom.
PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = [...document.images].map(i => `img ${i.naturalWidth}x${i.naturalHeight} ${i.complete}`).join(" ");
  document.body.appendChild(out);
});
</script>"""


def _images(page):
    return re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def test_report_embeds_every_figure_and_config_and_escapes_text(tmp_path):
    features = clustered_features()
    fake_run(tmp_path, "ce", features=features)
    fake_run(tmp_path, "<img src=x onerror=alert(1)>", loss="tks", overrides=("run.name=a&b",))
    page, notes = build_report(read_runs([tmp_path]))
    images = _images(page)
    assert len(images) == 4  # Fig. 3, 4, 5 and training curves
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)
    for caption in ("Fig. 3:", "Fig. 4:", "Fig. 5:", "Training curves:"):
        assert f"<figcaption>{caption}" in page
    assert page.count("<details>") == 2 and "name: a&amp;b" in page  # each run's config, escaped
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "Fig. 5 leaves out TKS" in page and notes  # what the figures lack is said on the page
    # the comparison table, with the best values bold
    assert '<th class="text">Method</th>' in page and "<strong>" in page
    # self-contained: every src and href stays inside the page
    assert all(v.startswith(("data:", "#")) for v in re.findall(r'(?:src|href)="([^"]*)"', page))
    assert "<link" not in page and "url(" not in page


def test_runs_table_names_the_selected_model_and_what_chose_it(tmp_path):
    selected = {"epoch": 3, "selected_on": "val", "top1": 0.875}
    fake_run(tmp_path, "new", metrics={"top1": 0.9, "selected": selected})
    fake_run(tmp_path, "old", seed=1, metrics={"top1": 0.9, "best_top1": 0.95, "best_epoch": 2})
    page, _ = build_report(read_runs([tmp_path]))
    assert "selected model: test top-1 (%)" in page
    assert "87.50 (epoch 3, chosen on val)" in page and "95.00 (epoch 2, chosen on test)" in page


def test_report_of_one_run_has_no_std(tmp_path):
    fake_run(tmp_path, "ce", metrics={"top1": 0.8125})
    page, _ = build_report(read_runs([tmp_path]))
    assert "<td>81.25</td>" in page and "±" not in page.split("<h2>Figures</h2>")[0].split("</table>")[0]


def _chromium(*args, cwd):
    return subprocess.run(
        [CHROMIUM, *HEADLESS, f"--user-data-dir={cwd / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install -y chromium)")
def test_report_renders_in_chromium_with_its_figures(digits_runs, tmp_path, capsys):
    root, _ = digits_runs
    report = tmp_path / "report.html"
    assert main(["report", str(root), "--out", str(report)]) == 0
    assert f"wrote {report}" in capsys.readouterr().out
    page = report.read_text()
    figures = len(_images(page))
    assert figures == 4

    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = _chromium("--dump-dom", probe.as_uri(), cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    sizes = re.findall(r"img (\d+)x(\d+) true", dom.stdout)
    assert len(sizes) == figures, dom.stdout[-2000:]
    assert all(int(w) > 500 and int(h) > 300 for w, h in sizes)  # decoded, at the size they were drawn
    assert "Comparison (paper Table 4)" in dom.stdout and "Baseline" in dom.stdout and "TKS" in dom.stdout

    shot = tmp_path / "shot.png"
    result = _chromium(f"--screenshot={shot}", "--window-size=1200,2000", report.as_uri(), cwd=tmp_path)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1200)
    assert (pixels < 0.5).mean() > 0.01 and pixels.std() > 0.1  # text and figures drawn, not a blank page
