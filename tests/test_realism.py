"""``gtacity eval realism``: FID/KID properties, clean-fid's own values reproduced, the FID Inception's
layout and weights, the offline message, and the stand-in on real frames."""

from __future__ import annotations

import json
import socket

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from kernel_cases import REAL_DATA
from torch import nn

from gtacity.cli import cli
from gtacity.engine.measure.features import FeatureError, FeatureNet, FIDInception, extract, standin_network
from gtacity.engine.measure.realism import RealismConfig, RealismSettings, distances, evaluate_realism, frames, prepare
from gtacity.engine.measure.weights import FILENAME, URL, load_inception


class Tiny(nn.Module):
    """A small, fixed feature network for the statistics tests (the FID Inception costs seconds a frame)."""

    num_features = 32

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Sequential(nn.Conv2d(3, 16, 8, stride=8), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=4), nn.ReLU())

    def forward(self, x):
        return self.conv(x / 255).mean(dim=(2, 3))


def tiny_net() -> FeatureNet:
    return FeatureNet(Tiny().eval(), "test", "0" * 64, "tiny test network", False)


def write_set(folder, n, tint, seed, sizes=((90, 160), (120, 96), (75, 133))):
    """``n`` PNG frames of mixed sizes: noise around a tint, a bright disc."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        img = np.clip(np.array(tint) + rng.integers(-50, 50, (h, w, 3)), 0, 255).astype(np.uint8)
        cv2.circle(img, (int(rng.integers(10, w - 10)), int(rng.integers(10, h - 10))), 12, (240, 240, 240), -1)
        cv2.imwrite(str(folder / f"{i:03d}.png"), img[:, :, ::-1])
    return folder


def test_fid_of_a_set_with_itself_is_zero_and_both_are_symmetric():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 8)), rng.normal(0.5, 1.2, size=(40, 8))
    assert abs(distances(x, x, subsets=3, subset_size=40).fid) < 1e-6
    xy, yx = distances(x, y, subsets=3, subset_size=40), distances(y, x, subsets=3, subset_size=40)
    assert xy.fid > 1 and xy.fid == pytest.approx(yx.fid, rel=1e-9)
    assert xy.kid > 0.1 and xy.kid == pytest.approx(yx.kid, rel=1e-9)
    # KID is unbiased: two samples of one distribution give about 0 (not exactly 0 for a set with
    # itself, whose cross term keeps the diagonal the within-set terms leave out).
    other = np.random.default_rng(5).normal(size=(40, 8))
    assert abs(distances(x, other, subsets=3, subset_size=40).kid) < 0.1 * xy.kid


def test_kid_spread_shrinks_with_larger_and_with_more_subsets():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(400, 16)), rng.normal(0.2, 1.0, size=(400, 16))
    # The std over subsets is the spread of one subset's estimate: it shrinks as subsets grow.
    assert distances(x, y, 50, 200).kid_std < 0.5 * distances(x, y, 50, 25).kid_std
    # The mean over subsets steadies with more of them: its spread over reruns shrinks.
    few = np.std([distances(x, y, 2, 25, seed=s).kid for s in range(12)])
    many = np.std([distances(x, y, 64, 25, seed=s).kid for s in range(12)])
    assert many < 0.4 * few


def test_clean_fid_values_are_reproduced_on_the_same_images(tmp_path):
    cleanfid = pytest.importorskip("cleanfid.fid")
    gen, real = write_set(tmp_path / "gen", 6, (200, 60, 40), 0), write_set(tmp_path / "real", 6, (60, 90, 190), 1)
    net = tiny_net()
    report = evaluate_realism(RealismConfig(gen, RealismSettings(real=real, kid_subsets=4, kid_subset_size=6,
                                                                 cache_dir="", progress=False)), net)
    model = lambda x: net.module(x)  # noqa: E731 - clean-fid calls it on its own 299x299 float resize
    cpu = torch.device("cpu")
    ref_fid = cleanfid.compare_folders(str(gen), str(real), model, mode="clean", num_workers=0, device=cpu,
                                       verbose=False)
    feats = [cleanfid.get_folder_features(str(d), model, num_workers=0, device=cpu, mode="clean", verbose=False)
             for d in (gen, real)]
    ref_kid = cleanfid.kernel_distance(feats[0], feats[1], num_subsets=4, max_subset_size=6)
    assert np.allclose(extract(net, frames(gen)), feats[0], rtol=1e-5, atol=1e-6)  # the same resize
    assert report.distances.fid == pytest.approx(ref_fid, rel=1e-4)
    assert report.distances.kid == pytest.approx(ref_kid, rel=1e-4)
    assert (report.n_generated, report.n_real) == (6, 6)


def test_real_features_are_cached_by_content(tmp_path):
    real = write_set(tmp_path / "real", 4, (60, 90, 190), 1)
    settings = RealismSettings(real=real, cache_dir=str(tmp_path / "cache"), progress=False)
    first = prepare(settings, tiny_net())
    cached = list((tmp_path / "cache" / "realism").glob("real-*.npy"))
    assert len(cached) == 1
    np.save(cached[0], first.real + 1.0)  # a cache hit returns what is stored, without reading frames
    assert np.array_equal(prepare(settings, tiny_net()).real, first.real + 1.0)
    write_set(real, 1, (0, 0, 0), 9)  # one real frame changed: a new key
    assert not np.array_equal(prepare(settings, tiny_net()).real, first.real + 1.0)
    assert len(list((tmp_path / "cache" / "realism").glob("real-*.npy"))) == 2


def test_fid_inception_layout_loads_a_weights_file(tmp_path):
    torch.manual_seed(0)
    module = FIDInception(random_init=True).eval()
    state = module.net.state_dict()
    assert len(state) == 566 and state["fc.weight"].shape == (1008, 2048)
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    net = load_inception(path)
    assert not net.standard and "NOT the published file" in net.description
    x = torch.rand(2, 3, 299, 299) * 255
    with torch.no_grad():
        assert torch.equal(net.module(x), module(x))
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(FeatureError, match="not the FID Inception weights .*pt_inception-2015-12-05"):
        load_inception(tmp_path / "other.pth")


def test_offline_without_weights_is_one_line_naming_file_source_and_flag(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("GTACITY_INCEPTION_URL", f"http://127.0.0.1:{port}/{FILENAME}")
    monkeypatch.setenv("GTACITY_CACHE_DIR", str(tmp_path / "cache"))
    gen, real = write_set(tmp_path / "gen", 2, (200, 60, 40), 0), write_set(tmp_path / "real", 2, (60, 90, 190), 1)
    result = CliRunner().invoke(cli, ["eval", "realism", str(gen), "--real", str(real), "-q"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert FILENAME in lines[0] and URL in lines[0] and "--inception-weights" in lines[0]
    assert not (tmp_path / "cache" / "inception" / FILENAME).exists()


def test_standin_cli_prints_kid_and_artifacts_and_writes_json(tmp_path):
    gen, real = write_set(tmp_path / "gen", 3, (200, 60, 40), 0), write_set(tmp_path / "real", 3, (60, 90, 190), 1)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["eval", "realism", str(gen), "--real", str(real), "--inputs", str(gen),
                                      "--features", "standin", "--kid-subsets", "5", "--json", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "KID is the one to trust on a few hundred frames" in result.stdout
    assert "NOT FID/KID values" in result.stdout and "artifacts  1.00x" in result.stdout
    data = json.loads(out.read_text())
    assert {"fid", "kid", "kid_std", "n_generated", "n_real", "mode", "size", "weights_sha256"} <= set(data)
    assert data["n_generated"] == data["n_real"] == 3 and data["size"] == [299, 299]
    assert data["mode"].startswith("clean") and data["artifacts"]["mean"] == pytest.approx(1.0)


def test_the_stand_in_seed_is_an_option_and_names_its_network(tmp_path):
    gen, real = write_set(tmp_path / "gen", 3, (200, 60, 40), 0), write_set(tmp_path / "real", 3, (60, 90, 190), 1)
    fids = {}
    for seed in (0, 1, 1):
        out = tmp_path / f"r{seed}.json"
        result = CliRunner().invoke(cli, ["eval", "realism", str(gen), "--real", str(real), "--features", "standin",
                                          "--standin-seed", str(seed), "--kid-subsets", "5", "--json", str(out), "-q"])
        assert result.exit_code == 0, result.output
        assert f"seed {seed}," in result.stdout  # the printed network says which stand-in it was
        data = json.loads(out.read_text())
        assert fids.setdefault(seed, data["fid"]) == data["fid"]  # a seed is the same network each time
    assert fids[0] != fids[1]


@pytest.mark.slow
def test_standin_puts_real_vs_real_far_below_game_vs_real():
    if not (REAL_DATA / "gta5").is_dir():
        pytest.skip("no real frames (shared/data/real)")
    settings = RealismSettings(real=REAL_DATA / "cityscapes_seq", max_frames=6, cache_dir="", progress=False)
    measurer = prepare(settings, standin_network(list(frames(REAL_DATA / "cityscapes_seq", 6))))
    real_vs_real = measurer.score(measurer.features(frames(REAL_DATA / "cityscapes" / "leftImg8bit", 6)))
    game_vs_real = measurer.score(measurer.features(frames(REAL_DATA / "gta5", 6)))
    assert game_vs_real.kid > 10 * real_vs_real.kid and game_vs_real.fid > 3 * real_vs_real.fid
