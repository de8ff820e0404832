"""``gtacity eval report``: the page opened from disk in headless Chromium (every image loads, no
console error, a screenshot with content), its numbers, escaping, and bad input as one line."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from chromium import CHROMIUM, Chromium
from click.testing import CliRunner
from motion import pan, write_video

from gtacity.checkpoint import bundled_generator, save_generator
from gtacity.cli import cli
from gtacity.engine.measure.realism import RealismSettings
from gtacity.engine.measure.report import ReportConfig, _back
from gtacity.engine.measure.report_segmentation import read_segmentation, render_segmentation
from gtacity.nets import ResnetGenerator, init_weights

# A folder name a page must show as text, never as markup.
ODD = 'held <b>out</b> & "odd"'
CLASS = "road<img src=x>"  # a class name in the segmentation JSON, likewise


def textured(folder, n, tint, seed, size=(64, 80)):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.clip(np.array(tint) + rng.integers(-60, 60, (*size, 3)), 0, 255).astype(np.uint8)
        cv2.circle(img, tuple(int(v) for v in rng.integers(12, 52, 2)), 10, (240, 240, 240), -1)
        cv2.imwrite(str(folder / f"{i:03d}.png"), img[:, :, ::-1])
    return folder


def segmentation_json(path, compare=True):
    def run(images, road):
        return {"images": images, "n_train_images": 8, "steps": 300, "weights_origin": "from scratch",
                "segmenter": "s.safetensors", "miou": road / 2, "classes": {CLASS: road, "sidewalk": None},
                "categories": {}, "category_miou": 0.5, "pixel_accuracy": 0.8, "fwiou": 0.6, "n_images": 8}
    data = {"kind": "segmentation", "recipe": {"name": "cpu-tiny"}, "seed": 0, "val": "cityscapes/",
            "train": run("gta5_city/", 0.62), "compare": run("gta5/", 0.57) if compare else None}
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A run folder as gtacity train keeps it (two steps, both directions), frames, a clip, a JSON."""
    root = tmp_path_factory.mktemp("report")
    for step in (8, 16):
        for k, direction in enumerate(("gta2city", "city2gta")):
            torch.manual_seed(step + k)
            save_generator(init_weights(ResnetGenerator(ngf=8, n_blocks=2)),
                           root / "run" / "generators" / f"step_{step:08d}_{direction}.safetensors", direction=direction)
    images = textured(root / ODD, 4, (200, 90, 60), 0)
    real = textured(root / "real", 6, (70, 100, 190), 1)
    video = write_video(root / "clip.mp4", pan(64, 48, 5, (2, 1)))
    return root, images, real, video, segmentation_json(root / "seg.json")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium); CI installs it")
def test_the_report_opens_in_chromium_with_every_image_and_no_error(inputs, tmp_path):
    root, images, real, video, seg = inputs
    page = tmp_path / "report.html"
    result = CliRunner().invoke(cli, [
        "eval", "report", str(root / "run"), "--images", str(images), "--real", str(real), "-o", str(page),
        "--frames", "2", "--video", str(video), "--segmentation", str(seg), "--features", "standin",
        "--kid-subsets", "5", "--backend", "torch", "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("report of 2 generators (4 frames scored, 2 shown; best by KID: step ")
    html = page.read_text()
    assert "http:" not in html.replace("http://www.w3.org/2000/svg", "") and "<script" not in html
    with Chromium(1000, 800) as browser:
        seen = browser.check(page)
    assert seen.errors == []
    # 2 generators x 2 frames x (input, translation, cycle, two details); none came from the JSON
    assert len(seen.images) == 20 and all(i["complete"] and i["width"] > 0 for i in seen.images), seen.images
    assert ODD in seen.text and CLASS in seen.text and "step 16" in seen.text and "best by KID" in seen.text
    assert "+5.0" in seen.text and "warping error" in seen.text  # segmentation difference, flicker curve
    shot = cv2.imdecode(np.frombuffer(seen.screenshot, np.uint8), cv2.IMREAD_COLOR)
    assert shot.shape[1] == 1000 and shot.shape[0] > 800 and shot.std() > 20
    for image in seen.images:  # where each image is, the screenshot is not blank
        x, y, w, h = (round(image[k]) for k in ("x", "y", "w", "h"))
        region = shot[y + 2:y + h - 2, x + 2:x + w - 2]
        assert region.size and region.std() > 3 and region.mean() < 245, image["alt"]
    cv2.imwrite(str(tmp_path / "report.png"), shot)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium); CI installs it")
def test_the_browser_check_sees_a_page_that_fetches_or_fails(tmp_path):
    """The check can fail: an image from the network, a missing file and a script are all caught."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="default-src '
                    "'none'; img-src data:\"></head><body><img src=\"http://127.0.0.1:9/x.png\" alt=\"net\">"
                    '<script>console.error("boom")</script></body></html>')
    with Chromium(400, 300) as browser:
        seen = browser.check(page)
    assert [i["width"] for i in seen.images] == [0]
    assert len(seen.errors) == 2 and "Content Security Policy" in seen.errors[0]


def test_the_segmentation_table_shows_both_columns_and_their_difference(tmp_path):
    table = render_segmentation(read_segmentation(segmentation_json(tmp_path / "s.json")))
    assert "road&lt;img src=x&gt;" in table and "<img" not in table
    assert ">62.0</td>" in table and ">57.0</td>" in table and "+5.0" in table and "n/a" in table
    alone = render_segmentation(read_segmentation(segmentation_json(tmp_path / "t.json", compare=False)))
    assert "difference" not in alone and ">62.0</td>" in alone


def test_the_bundled_generator_goes_back_with_the_bundled_one_of_the_other_direction(inputs):
    root, images, real, _, _ = inputs
    cfg = ReportConfig(("gta2city_demo",), images, "r.html", RealismSettings(real=real))
    assert _back(cfg, bundled_generator("gta2city")) == str(bundled_generator("city2gta"))
    step = root / "run" / "generators" / "step_00000016_gta2city.safetensors"
    assert _back(cfg, step) == str(step.with_name("step_00000016_city2gta.safetensors"))


@pytest.mark.parametrize("args, line", [
    (["-o", "{tmp}/r.png"], "{tmp}/r.png: the report is an HTML page; give -o a .html name"),
    (["-o", "{tmp}/r.html", "--segmentation", "{tmp}/none.json"],
     "{tmp}/none.json: no such file; pass the JSON of gtacity eval miou --json or gtacity eval segmentation"),
    (["-o", "{tmp}/r.html", "--segmentation", "{tmp}/list.json"],
     ("{tmp}/list.json: no per-class IoUs ('classes'); pass the JSON of gtacity eval miou --json or gtacity eval "
      "segmentation")),
])
def test_bad_input_is_one_line_and_no_page(inputs, tmp_path, args, line):
    root, images, real, _, _ = inputs
    (tmp_path / "list.json").write_text("[1, 2]")
    args = [a.format(tmp=tmp_path) for a in args]
    result = CliRunner().invoke(cli, ["eval", "report", str(root / "run"), "--images", str(images), "--real",
                                      str(real), "--features", "standin", *args])
    assert result.exit_code == 1 and result.stderr.strip().splitlines() == [f"error: {line.format(tmp=tmp_path)}"]
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "r.png").exists()


def test_a_missing_generator_is_one_line_before_any_work(inputs, tmp_path):
    _, images, real, _, _ = inputs
    result = CliRunner().invoke(cli, ["eval", "report", "gta2city_demo", str(tmp_path / "nope.safetensors"),
                                      "--images", str(images), "--real", str(real), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and "nope.safetensors: no such weights file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
