"""`gtacity eval fidelity`: student vs teacher PSNR/SSIM and speeds, over folders and videos."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner
from media import make_clip, make_image_tree

from gtacity.checkpoint import save_generator
from gtacity.cli import cli
from gtacity.engine.measure.fidelity import FidelityConfig, evaluate_fidelity
from gtacity.nets import LiteMobileResnetGenerator, MobileResnetGenerator, count_macs, init_weights
from gtacity.quality import psnr


def uint8_translation(net, image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        y = ((net(x) + 1) * 127.5).round().clamp(0, 255)
    return y.double() / 255


def test_folder_psnr_matches_a_direct_computation_and_the_table_has_both(tmp_path, tiny_generator):
    torch.manual_seed(1)
    student = init_weights(MobileResnetGenerator(4, 1)).eval()
    t = save_generator(tiny_generator, tmp_path / "t.safetensors", direction="gta2city")
    s = save_generator(student, tmp_path / "s.safetensors", direction="gta2city")
    images = make_image_tree(tmp_path / "frames", ["a.png", "sub/b.png", "c.png"], size=(40, 32))  # lossless
    report = evaluate_fidelity(FidelityConfig(tmp_path / "frames", t, s, backend="torch", progress=False))
    expected = np.mean([float(psnr(uint8_translation(student, im), uint8_translation(tiny_generator, im))[0])
                        for im in images.values()])
    assert report.frames == len(images) and abs(report.psnr_mean - expected) < 1e-6
    assert report.student.gmacs_per_frame * 1e9 == count_macs(4, 1, 32, 40, arch="mobile_resnet_generator")
    assert report.teacher.fps > 0 and report.student.fps > 0
    table = report.format()
    assert "teacher  resnet_generator" in table and "student  mobile_resnet_generator" in table
    assert "x fewer MACs" in table and "PSNR" in table and "SSIM" in table


def test_table_columns_line_up_for_every_arch_name(tmp_path, tiny_generator):
    student = init_weights(LiteMobileResnetGenerator(4, 1)).eval()  # the longest arch name
    t = save_generator(tiny_generator, tmp_path / "t.safetensors", direction="gta2city")
    s = save_generator(student, tmp_path / "s.safetensors", direction="gta2city")
    make_image_tree(tmp_path / "frames", ["a.png"], size=(40, 32))
    table = evaluate_fidelity(FidelityConfig(tmp_path / "frames", t, s, backend="torch", progress=False)).format()
    header, teacher, student_row = table.splitlines()[1:4]
    assert student_row.startswith("student  lite_mobile_resnet_generator ")
    assert len(header) == len(teacher) == len(student_row)  # every column right-aligned at the same place


def test_cli_over_a_video_with_json(tmp_path, tiny_generator):
    t = save_generator(tiny_generator, tmp_path / "t.safetensors", direction="city2gta")
    make_clip(tmp_path / "c.mp4", frames=5, size=(64, 48), fps=10)
    out = tmp_path / "f.json"
    result = CliRunner().invoke(cli, ["eval", "fidelity", "--teacher", str(t), "--student", str(t),
                                      str(tmp_path / "c.mp4"), "--backend", "openvino", "--max-frames", "3",
                                      "--json", str(out), "-q"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["frames"] == 3 and data["psnr_mean"] == float("inf") and data["ssim_mean"] == 1.0


def test_generators_of_different_directions_are_refused(tmp_path, tiny_generator):
    t = save_generator(tiny_generator, tmp_path / "t.safetensors", direction="gta2city")
    s = save_generator(tiny_generator, tmp_path / "s.safetensors", direction="city2gta")
    make_image_tree(tmp_path / "frames")
    result = CliRunner().invoke(cli, ["eval", "fidelity", "--teacher", str(t), "--student", str(s), str(tmp_path / "frames")])
    assert result.exit_code == 1
    assert "the student translates city2gta, the teacher" in result.output and "Traceback" not in result.output
