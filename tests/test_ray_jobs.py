"""Folder jobs on a real local Ray cluster: the plain job's result, resume after a killed driver,
a killed worker's task retried.

One cluster (``ray start --head --block`` on 127.0.0.1, 2 CPUs, a 150 MB object store) serves the
module; the fixture stops it by its pid. Real ``gtacity translate`` processes, real signals, a tiny
generator on 64x48 images. Without Ray these tests skip, saying how to install it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
from media import make_clip, make_image_tree, video_info, write_garbage
from test_jobs import SIZE, command, tree, user_files
from test_translate import reference

from gtacity.checkpoint import save_generator
from gtacity.engine.jobs.journal import STATE_DIR
from gtacity.images import decode_rgb
from gtacity.nets import ResnetGenerator, init_weights

needs_ray = pytest.mark.skipif(find_spec("ray") is None, reason='needs Ray: pip install -e ".[ray]"')
TRANSLATOR = "ray::MapWorker(MapBatches(_Translator))"


@pytest.fixture
def weights(tmp_path, tiny_generator):
    return save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session(sid: int) -> list[int]:
    """Live processes of session ``sid`` (what ``ray start`` and its children run in)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (OSError, ValueError):
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if entry.isdigit() and int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray head on 127.0.0.1 for this module: (address, session id, environment for its drivers),
    with a token of its own; stopped by its pid after."""
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    log = tmp_path_factory.mktemp("ray-head") / "head.log"
    with open(log, "w") as sink:
        head = subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--node-ip-address",
             "127.0.0.1", "--port", str(port), "--num-cpus", "2", "--num-gpus", "0", "--object-store-memory",
             "150000000", "--include-dashboard", "false", "--disable-usage-stats"],
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text() and head.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert head.poll() is None and "Ray runtime started" in log.read_text(), log.read_text()[-3000:]
        yield f"127.0.0.1:{port}", head.pid, env
    finally:
        head.send_signal(signal.SIGTERM)  # drains for up to 30 s, then stops its processes
        try:
            head.wait(timeout=90)
        except subprocess.TimeoutExpired:
            head.kill()
        for pid in _session(head.pid):  # stragglers of this cluster only
            os.kill(pid, signal.SIGKILL)


def ray_command(inp, out, weights, address, *extra) -> list[str]:
    return command(inp, out, weights, "--ray", address, *extra)


def outputs_done(out: Path) -> int:
    return sum(1 for p in out.rglob("*.png") if not p.name.startswith(".")) if out.is_dir() else 0


def hidden_files(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if STATE_DIR not in p.parts]


def recorded(out: Path) -> list[str]:
    keys = []
    for journal in (out / STATE_DIR).glob("*.journal"):
        lines = journal.read_text().split("\n")[:-1]  # the last piece may be a line being written
        keys += [json.loads(line[5:]) for line in lines if line.startswith("done ")]
    return keys


def assert_translated(out: Path, images: dict, net) -> None:
    for rel, src in images.items():
        got = decode_rgb(out / rel)
        assert got is not None and got.shape == src.shape
        assert np.abs(got.astype(int) - reference(net, src).astype(int)).max() <= 1, rel


def gta5_tree(root: Path) -> dict:
    """A GTA5 tree: 5 images with palette label maps, one without its label map, one unreadable."""
    images = make_image_tree(root / "images", [f"{i:05d}.png" for i in range(1, 6)], size=SIZE)
    rng = np.random.default_rng(0)
    (root / "labels").mkdir()
    from PIL import Image

    for name in images:
        label = Image.fromarray(rng.integers(0, 34, size=(SIZE[1], SIZE[0]), dtype=np.uint8), mode="P")
        label.putpalette(list(rng.integers(0, 256, 768, dtype=np.uint8)))
        label.save(root / "labels" / name)
    make_image_tree(root / "images", ["00006.png"], size=SIZE)  # no label map
    write_garbage(root / "images" / "00007.png")
    (root / "labels" / "00007.png").write_bytes((root / "labels" / "00001.png").read_bytes())
    return {f"images/{name}": pixels for name, pixels in images.items()}


@needs_ray
@pytest.mark.slow
def test_local_ray_run_gives_the_plain_runs_files_labels_and_failures(tmp_path, weights, tiny_generator):
    images = gta5_tree(tmp_path / "gta5")
    args = ("--dataset", "gta5", "--labels", "trainids")
    plain = subprocess.run(command(tmp_path / "gta5", tmp_path / "plain", weights, *args),
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode == 1, plain.stderr
    on_ray = subprocess.run(command(tmp_path / "gta5", tmp_path / "ray", weights, *args, "--ray", "local"),
                            capture_output=True, text=True, timeout=600)
    assert on_ray.returncode == 1, on_ray.stderr
    assert "files: 5 translated, 0 already done, 2 failed" in on_ray.stdout
    assert on_ray.stderr.strip().splitlines()[-1].startswith("error: 2 file(s) failed and were skipped")
    plain_files = user_files(tmp_path / "plain")
    assert user_files(tmp_path / "ray") == plain_files and "labels/00001_labelTrainIds.png" in plain_files
    for rel in plain_files:
        if rel.startswith("images/"):
            a, b = decode_rgb(tmp_path / "plain" / rel), decode_rgb(tmp_path / "ray" / rel)
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 1, rel
        else:  # labels and the failures list: byte for byte
            assert (tmp_path / "plain" / rel).read_bytes() == (tmp_path / "ray" / rel).read_bytes(), rel
    assert_translated(tmp_path / "ray", images, tiny_generator)
    plain_manifest, ray_manifest = (json.loads((tmp_path / o / STATE_DIR / "manifest.json").read_text())
                                    for o in ("plain", "ray"))
    assert plain_manifest.pop("token") != ray_manifest.pop("token") and plain_manifest == ray_manifest
    assert hidden_files(tmp_path / "ray") == []


@needs_ray
@pytest.mark.slow
def test_driver_killed_then_rerun_finishes_exactly_and_other_settings_are_refused(tmp_path, weights,
                                                                                  tiny_generator, cluster):
    address, _, env = cluster
    # 160 images: 10 blocks of 16 (the most per task), so the driver journals its first batch while
    # most are still to do. With 40 (4 blocks of 10) a quiet machine once finished them all before
    # the first batch reached the driver, and the kill landed after the job.
    images = tree(tmp_path / "in", 160)
    out = tmp_path / "out"
    driver = subprocess.Popen(ray_command(tmp_path / "in", out, weights, address), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    # Killed once the driver has journalled a first batch of items (a batch is recorded when it comes back whole).
    while driver.poll() is None and time.monotonic() < deadline and not recorded(out):
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    _, stderr = driver.communicate()
    before = outputs_done(out)
    assert 0 < before < len(images), f"the kill did not land mid-job; the test proves nothing: {stderr[-2000:]}"
    time.sleep(2)  # the cluster ends the dead driver's workers
    done = subprocess.run(ray_command(tmp_path / "in", out, weights, address), env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    counts = re.search(r"files: (\d+) translated, (\d+) already done, 0 failed", done.stdout)
    translated, already = int(counts[1]), int(counts[2])
    # Items renamed into place but not yet journalled when the driver died are redone, never lost.
    assert translated + already == len(images) and 0 < already <= outputs_done(out)
    assert user_files(out) == sorted(str(p) for p in images)
    assert sorted(set(recorded(out))) == sorted(str(p) for p in images)
    assert hidden_files(out) == []
    assert_translated(out, images, tiny_generator)

    torch.manual_seed(1)
    other = save_generator(init_weights(ResnetGenerator(ngf=8, n_blocks=2)), tmp_path / "other.safetensors",
                           direction="gta2city")
    journals = sorted((out / STATE_DIR).iterdir())
    refused = subprocess.run(ray_command(tmp_path / "in", out, other, address), env=env, capture_output=True,
                             text=True, timeout=600)
    assert refused.returncode == 1 and "was made with other settings (weights_sha256 was '" in refused.stderr
    assert sorted((out / STATE_DIR).iterdir()) == journals


@needs_ray
@pytest.mark.slow
def test_a_killed_worker_is_retried_and_the_set_is_complete(tmp_path, weights, tiny_generator, cluster):
    address, session, env = cluster
    images = tree(tmp_path / "in", 40)
    (tmp_path / "in" / "clips").mkdir()
    make_clip(tmp_path / "in" / "clips" / "drive.mp4", frames=6, size=SIZE)
    out = tmp_path / "out"
    driver = subprocess.Popen(ray_command(tmp_path / "in", out, weights, address), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    killed = None
    while driver.poll() is None and time.monotonic() < deadline and killed is None:
        actors = [pid for pid in _session(session) if _cmdline(pid).startswith(TRANSLATOR)]
        if actors and outputs_done(out) >= 4:
            os.kill(actors[0], signal.SIGKILL)
            killed = actors[0]
        time.sleep(0.02)
    stdout, stderr = driver.communicate(timeout=600)
    assert killed is not None, "the job ended before a worker could be killed; the test proves nothing"
    assert driver.returncode == 0, stderr
    assert f"files: {len(images) + 1} translated, 0 already done, 0 failed" in stdout
    assert user_files(out) == sorted([str(p) for p in images] + ["clips/drive.mp4"])
    assert sorted(recorded(out)) == sorted([str(p) for p in images] + ["clips/drive.mp4"])
    assert video_info(out / "clips" / "drive.mp4")["frames"] == 6
    assert hidden_files(out) == []
    assert_translated(out, images, tiny_generator)


def test_ray_option_without_ray_says_how_to_install_it(tmp_path, weights):
    tree(tmp_path / "in", 1)
    script = "import sys; sys.modules['ray'] = None; from gtacity.cli import main; sys.argv[0] = 'gtacity'; main()"
    run = subprocess.run([sys.executable, "-c", script, "translate", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                          "--weights", str(weights), "--ray", "local"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert run.stderr.strip() == 'error: the --ray option needs Ray, which is not installed here; ' \
                                 'pip install "gtacity[ray]"'
    assert not (tmp_path / "out").exists()


def test_ray_option_on_a_single_file_is_refused(tmp_path, weights):
    make_image_tree(tmp_path, ["one.png"], size=SIZE)
    run = subprocess.run([sys.executable, "-m", "gtacity", "translate", str(tmp_path / "one.png"), "-o",
                          str(tmp_path / "two.png"), "--weights", str(weights), "--ray", "local"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "--ray work on a folder input" in run.stderr


@needs_ray
@pytest.mark.parametrize("workers, device, resources, expected", [
    (None, "auto", {"CPU": 16.0}, (8, 0)),  # half the CPUs: the other half decodes and writes
    (None, "auto", {"CPU": 64.0, "GPU": 4.0}, (4, 1)),  # one actor per GPU
    (2, "auto", {"CPU": 64.0, "GPU": 4.0}, (2, 1)),
    (None, "cpu", {"CPU": 8.0, "GPU": 4.0}, (4, 0)),  # --device cpu keeps the actors off the GPUs
])
def test_pool_size_and_gpus_per_actor(workers, device, resources, expected):
    from gtacity.engine.jobs.ray_runner import RayCluster

    cluster = RayCluster("auto", workers, device)
    cluster._size(resources)
    assert (cluster.workers, cluster.gpus) == expected


@needs_ray
@pytest.mark.parametrize("workers, device, resources, message", [
    (2, "cpu", {"CPU": 2.0}, "--ray-workers 2: the Ray cluster has 2 CPUs; .* use at most 1"),
    (None, "cuda", {"CPU": 8.0}, "--device cuda: the Ray cluster has no GPUs"),
    (0, "auto", {"CPU": 8.0}, "--ray-workers must be at least 1"),
])
def test_pools_the_cluster_cannot_hold_are_refused_in_one_line(workers, device, resources, message):
    from gtacity.engine.jobs.ray_runner import RayCluster, RayError

    with pytest.raises(RayError, match=message):
        RayCluster("auto", workers, device)._size(resources)
