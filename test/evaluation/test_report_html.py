"""report.html (lmanet_ros.evaluation.report_html): the Markdown subset the reports use, rendered;
the page an evaluation writes beside report.md; and its overlay video, loaded and decoded by a
real browser (headless Chromium; skipped where ``chromium`` is not installed)."""
import re
import shutil
import subprocess

import pytest

from eval_helpers import identity  # noqa: F401 (a fixture, see usefixtures)
from eval_helpers import IMAGE, LABELS, W, write_scene_bag
from lmanet_ros.evaluation import EvalOptions, evaluate
from lmanet_ros.evaluation.report_html import HTML_FILE, markdown_to_html

MARKDOWN = """# Title <x>

- Bag: `/a<b>` (mcap)
- **Partial run**: two

Some text with `code` and **bold**
on two lines.

| Class | `model` |
|---|---|
| road | 50.0 |
| wall | absent |

![Per-class IoU](class_iou.png)

![Input | overlay](overlay.mp4)
"""

#: Appended to a copy of report.html: writes the video's state into the page once it has its
#: first frame (or fails), for --dump-dom to show.
PROBE = """<script>
(function () {
  var video = document.querySelector('video');
  var out = document.createElement('pre');
  out.id = 'probe';
  document.body.appendChild(out);
  function show(event) {
    out.textContent = 'event=' + event + ' readyState=' + video.readyState +
      ' videoWidth=' + video.videoWidth;
  }
  show('none');
  video.addEventListener('loadeddata', function () { show('loadeddata'); });
  video.addEventListener('error', function () { show('error'); }, true);
  video.load();
})();
</script>
"""


def test_markdown_subset_to_html():
    page = markdown_to_html(MARKDOWN)
    assert page.startswith("<!DOCTYPE html>") and "<title>Title &lt;x&gt;</title>" in page
    assert "<h1>Title &lt;x&gt;</h1>" in page
    assert "<li>Bag: <code>/a&lt;b&gt;</code> (mcap)</li>" in page
    assert "<li><strong>Partial run</strong>: two</li>" in page
    assert "<p>Some text with <code>code</code> and <strong>bold</strong> on two lines.</p>" \
        in page
    assert "<thead><tr><th>Class</th><th><code>model</code></th></tr></thead>" in page
    assert "<tr><td>road</td><td>50.0</td></tr>" in page and "---" not in page
    assert '<img src="class_iou.png" alt="Per-class IoU">' in page
    assert ('<video controls muted playsinline preload="auto"><source src="overlay.mp4" '
            'type="video/mp4">') in page
    assert "<figcaption>Input | overlay</figcaption>" in page
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")


@pytest.fixture
def report_dir(tmp_path, identity):  # noqa: F811 (the fixture imported above)
    """An evaluation's output directory with the overlay video (4 toy street frames)."""
    bag = write_scene_bag(tmp_path / "bag", n=4)
    out = tmp_path / "out"
    evaluate(EvalOptions(bag=bag, out=out, model="lmanet_erfnet", device="cpu",
                         image_topics=[IMAGE], label_topic=LABELS, plots=False))
    return out


def test_evaluation_writes_the_page_beside_report_md(report_dir):
    page = (report_dir / HTML_FILE).read_text()
    assert page == markdown_to_html((report_dir / "report.md").read_text())
    assert '<source src="overlay.mp4" type="video/mp4">' in page
    assert "<h2>Per-class IoU (%)</h2>" in page and "<td>absent</td>" in page


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (Debian: apt-get install chromium)")
def test_overlay_video_plays_in_headless_chromium(report_dir, tmp_path):
    probe = report_dir / "probe.html"  # beside report.html: the same relative links
    probe.write_text((report_dir / HTML_FILE).read_text().replace("</body>", PROBE + "</body>"))
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
               "--autoplay-policy=no-user-gesture-required", "--allow-file-access-from-files",
               f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=10000",
               "--dump-dom", probe.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">event=(\w+) readyState=(\d) videoWidth=(\d+)</pre>',
                      done.stdout)
    assert found, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    event, ready, width = found[1], int(found[2]), int(found[3])
    assert event == "loadeddata" and ready >= 2 and width == 2 * W, found[0]
