"""Unpacking a dataset archive that is hostile: a symbolic link planted at the staging folder's name,
members beneath a symbolic-link or file member. Real zips on disk; the download is already done
(the archive sits where ``gtacity data download`` keeps it), so no network is involved."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest
from click.testing import CliRunner
from PIL import Image

from gtacity.cli import cli
from gtacity.trainer.download import download_dataset

SPLITS = ("trainA", "trainB", "testA", "testB")


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 4), (40, 90, 200)).save(buf, "PNG")
    return buf.getvalue()


def write_zip(path, entries: list[tuple[str, bytes, int | None]]) -> None:
    """``(name, data, unix mode or None)`` entries, in order; a mode with S_IFLNK makes a symlink entry."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)


def dataset_entries() -> list[tuple[str, bytes, int | None]]:
    return [(f"cityscapes2gta/{split}/{i}.png", png(), None) for split in SPLITS for i in range(2)]


def test_planted_symlink_at_the_staging_folder_is_not_followed(tmp_path):
    to, victim = tmp_path / "data", tmp_path / "victim"
    to.mkdir()
    victim.mkdir()
    # An archive member outside the dataset folder: unpacked through the link, it would stay there.
    write_zip(to / "cityscapes2gta.zip", [*dataset_entries(), ("planted.txt", b"owned", None)])
    (to / ".cityscapes2gta.unpacking").symlink_to(victim, target_is_directory=True)
    layout = download_dataset("cityscapes2gta", to, progress=False)
    assert [f.images for f in layout.folders] == [2, 2, 2, 2]
    assert list(victim.iterdir()) == []
    assert sorted(p.name for p in to.iterdir()) == ["cityscapes2gta", "cityscapes2gta.zip"]


@pytest.mark.parametrize("kind, mode, data", [
    ("a symbolic link", stat.S_IFLNK | 0o777, b"/tmp"),
    ("a file", stat.S_IFREG | 0o644, b"not a folder"),
])
def test_member_beneath_a_link_or_file_member_is_one_line(tmp_path, kind, mode, data):
    to = tmp_path / "data"
    to.mkdir()
    archive = to / "cityscapes2gta.zip"
    write_zip(archive, [("cityscapes2gta/trainA", data, mode), ("cityscapes2gta/trainA/evil.png", png(), None),
                        *dataset_entries()[2:]])
    result = CliRunner().invoke(cli, ["data", "download", "cityscapes2gta", "--to", str(to)])
    assert result.exit_code == 1
    assert result.output == (f"error: {archive}: member 'cityscapes2gta/trainA/evil.png' lies beneath "
                             f"'cityscapes2gta/trainA', which the archive holds as {kind}; refusing to unpack "
                             "(delete the file and check --url)\n")
    assert sorted(p.name for p in to.iterdir()) == ["cityscapes2gta.zip"]


def test_member_the_file_system_cannot_hold_is_one_line(tmp_path):
    to = tmp_path / "data"
    to.mkdir()
    long_name = "cityscapes2gta/trainA/" + "x" * 300 + ".png"
    write_zip(to / "cityscapes2gta.zip", [*dataset_entries(), (long_name, png(), None)])
    result = CliRunner().invoke(cli, ["data", "download", "cityscapes2gta", "--to", str(to)])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: cannot unpack {to}/cityscapes2gta.zip: File name too long (")
    assert result.output.endswith("); check --url\n") and len(result.output.splitlines()) == 1
    assert sorted(p.name for p in to.iterdir()) == ["cityscapes2gta.zip"]
