"""The HTML report: self-contained, every figure embedded, and it renders in a real browser."""

import base64
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from flowrestore.analysis import calibration as C
from flowrestore.analysis import evaluate as E
from flowrestore.analysis import plots
from flowrestore.analysis.report import Figure, build_report, example_figures

from test_evaluate import PIXEL, make_run

from conftest import ensure_debian_package  # noqa: E402

CHROMIUM = os.environ.get("FLOWRESTORE_CHROMIUM", "/usr/bin/chromium")
TABLE_IDS = ["data-table", "metrics-table", "comparison-table", "per-image-table", "calibration-table"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    run = make_run(root, shape=(64, 64), test=2, val=2)
    ev = root / "evaluate"
    tables = {k: ev / f"{k}.tsv" for k in ("metrics", "summary", "pd", "comparisons")}
    E.run(run["manifest"], run["convert"], run["predict"], run["models"], tables["metrics"], tables["summary"],
          tables["pd"], tables["comparisons"])
    plots.perception_distortion(E.read_tsv(tables["pd"]), E.baselines(E.read_tsv(tables["summary"])), ev / "pd.png")
    examples = []
    for pair in E.pairs_of_split(run["manifest"], run["convert"]):
        examples.append(ev / f"{pair.acquisition}.png")
        plots.example_crops(E.example_panels(pair, run["predict"], run["models"], 32), examples[-1], pair.acquisition, PIXEL)
    fitted = C.calibrate_model("hm", E.pairs_of_split(run["manifest"], run["convert"], "val"), run["predict"], "linear")
    summary, bins = C.judge_model(fitted, E.pairs_of_split(run["manifest"], run["convert"]), run["predict"])
    C.write_json(summary, root / "hm.json")
    plots.calibration_curve(bins, summary, root / "hm.png")
    curve = [{"step": s, "loss": 1 / s, "val_loss": 1.2 / s} for s in (1, 2, 3)]
    plots.loss_curve(curve, root / "loss.png", "hm")
    net = {"channels": 8}  # shared between models, as the validated config shares defaults
    config = {"demo": {"make": True}, "models": {"hm": {"method": "guided_cfm", "net": net},
                                                 "reg": {"method": "regression", "net": net}}}
    output = root / "report" / "report.html"
    html = build_report(output, config, run["manifest"], tables["metrics"], tables["summary"], tables["comparisons"],
                        perception_png=ev / "pd.png", calibration=[(root / "hm.json", root / "hm.png")],
                        examples=example_figures(examples), training=[Figure("Model hm", str(root / "loss.png"))])
    return output, html


def test_report_is_one_self_contained_file(report):
    output, html = report
    assert output.read_text() == html
    assert not list(output.parent.glob(".*tmp*"))  # written atomically, nothing left behind
    # no external resources: every src/href is a data URI or an in-page anchor
    for attr, value in re.findall(r'\b(src|href)="([^"]*)"', html):
        assert value.startswith(("data:", "#")), (attr, value)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == html.count("<img") == 2 + 1 + 1 + 1  # examples, perception, calibration, training
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_holds_tables_numbers_config_and_captions(report):
    _, html = report
    for table in TABLE_IDS:
        assert f'id="{table}"' in html
    assert "hm MMSE" in html and "reg (regression)" in html and "input (widefield)" in html
    assert "PSNR gain over the widefield input" in html
    assert "UCE test after" in html and "calibrated std = a * std + b" in html
    assert "What the std map of hm means" in html and "inside the central 95%" in html
    per_acquisition = html.split('class="per-acquisition"')[1].split("</table>")[0]
    rows = json.loads((report[0].parent.parent / "hm.json").read_text())["test"]["per_acquisition"]
    assert rows and per_acquisition.count("<tr>") == 1 + len(rows)
    assert all(f">{r['acquisition']}<" in per_acquisition for r in rows)
    assert "the samples' own quantiles" not in html  # only one of the K=4 samples was kept
    assert "demo:\n  make: true" in html  # the run's config as YAML
    assert "&amp;id0" not in html and "*id0" not in html  # written out in full, no YAML aliases
    assert "posterior sample" in html and "MMSE" in html and "standard deviation" in html
    assert "nan" not in re.sub(r"<img[^>]*>", "", html).lower().split("<script")[0].replace("nano", "")


def test_missing_images_fail_loudly(tmp_path, report):
    with pytest.raises(FileNotFoundError):
        from flowrestore.analysis.report import data_uri

        data_uri(tmp_path / "nope.png")


def _chromium(args, tmp_path):
    profile = tempfile.mkdtemp(dir=tmp_path)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def chromium():
    if not ensure_debian_package(CHROMIUM, "chromium"):
        pytest.skip(f"headless Chromium not found at {CHROMIUM} (Debian: apt-get install chromium; CI installs it)")


def test_report_renders_in_headless_chromium(chromium, report, tmp_path):
    output, html = report
    done = _chromium(["--virtual-time-budget=5000", "--dump-dom", output.resolve().as_uri()], tmp_path)
    dom = done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
    total = re.search(r'data-images-total="(\d+)"', dom)
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    assert total and loaded, "the report's load script did not run"
    assert int(total.group(1)) == html.count("<img") == int(loaded.group(1)), "some images did not load"
    for table in TABLE_IDS:
        assert f'id="{table}"' in dom
    shot = tmp_path / "report.png"
    _chromium([f"--screenshot={shot}", "--window-size=1280,2000", output.resolve().as_uri()], tmp_path)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_a_broken_image_is_detected_by_the_browser_check(chromium, report, tmp_path):
    """The Chromium check can fail: an image whose data is not a PNG is counted as not loaded."""
    output, html = report
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1))
    dom = _chromium(["--virtual-time-budget=5000", "--dump-dom", broken.resolve().as_uri()], tmp_path).stdout
    total = int(re.search(r'data-images-total="(\d+)"', dom).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', dom).group(1))
    assert loaded == total - 1



def test_report_without_pixel_size_shows_no_micrometres(tmp_path):
    """Pixel sizes unknown: FRC titled in pixels and no µm figure anywhere in the metric tables."""
    from flowrestore.data.pairing import read_rows, write_rows

    run = make_run(tmp_path, shape=(48, 48), test=2, val=1)
    rows = read_rows(run["manifest"])
    for r in rows:
        r["pixel_size"] = "unknown,unknown"
    write_rows(rows, run["manifest"])
    ev = tmp_path / "evaluate"
    tables = {k: ev / f"{k}.tsv" for k in ("metrics", "summary", "pd", "comparisons")}
    E.run(run["manifest"], run["convert"], run["predict"], run["models"], tables["metrics"], tables["summary"],
          tables["pd"], tables["comparisons"])
    html = build_report(tmp_path / "report.html", {}, run["manifest"], tables["metrics"], tables["summary"],
                        tables["comparisons"])
    assert "FRC resolution 1/7 (pixels)" in html and "FRC resolution</b> (pixels)" in html
    assert "FRC resolution 1/7 (µm)" not in html and "(µm) is the finest" not in html
    assert "unknown × unknown" in html  # the data table says so, instead of 1 × 1 µm
