"""Publishing a file under a second name (restorevar.fileio.publish_copy): one file on disk where it can be,
and a later replacement of the source never reaches the published name."""
import os
from pathlib import Path

import pytest

from restorevar import fileio
from restorevar.fileio import atomic_write, publish_copy


def test_publish_links_and_a_replaced_source_leaves_the_copy_as_it_was(tmp_path):
    src, dst = tmp_path / "runs" / "last.pt", tmp_path / "checkpoints" / "stage.pt"
    atomic_write(src, lambda t: Path(t).write_bytes(b"step 10"))
    publish_copy(src, dst)
    assert os.path.samefile(src, dst) and dst.read_bytes() == b"step 10"
    atomic_write(src, lambda t: Path(t).write_bytes(b"step 20"))  # the trainer's next checkpoint
    assert dst.read_bytes() == b"step 10" and src.read_bytes() == b"step 20"
    publish_copy(src, dst)  # publishing again replaces the old name
    assert dst.read_bytes() == b"step 20" and sorted(p.name for p in dst.parent.iterdir()) == ["stage.pt"]


def test_publish_copies_where_no_link_can_be_made(tmp_path, monkeypatch):
    def no_links(*_):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(fileio.os, "link", no_links)
    src, dst = tmp_path / "a.pt", tmp_path / "out" / "b.pt"
    src.write_bytes(b"weights")
    publish_copy(src, dst)
    assert dst.read_bytes() == b"weights" and not os.path.samefile(src, dst)
    assert sorted(p.name for p in dst.parent.iterdir()) == ["b.pt"]


def test_read_regular_text_refuses_what_is_not_a_regular_utf8_file(tmp_path):
    import os

    from restorevar.errors import UserError
    from restorevar.fileio import read_regular_text

    (tmp_path / "ok.json").write_text("{}")
    assert read_regular_text(tmp_path / "ok.json", "baseline") == "{}"
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "bin").write_bytes(b"\xff\xfe{")
    for name, fragment in (("fifo", "not a regular file"), ("bin", "not UTF-8"), ("missing", "not found"),
                           (".", "is a folder")):
        with pytest.raises(UserError, match=fragment):
            read_regular_text(tmp_path / name, "baseline")
    with pytest.raises(UserError, match="over the limit"):
        read_regular_text(tmp_path / "ok.json", "baseline", max_bytes=1)


def test_a_killed_runs_staging_folder_is_removed_by_the_next_run(tmp_path):
    import subprocess
    import sys

    from restorevar.fileio import staging_folder_beside

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    stale = tmp_path / f".bench.synth-{dead}-abc"
    (stale / "train").mkdir(parents=True)
    live = tmp_path / f".bench.synth-{os.getpid()}-def"
    live.mkdir()
    other = tmp_path / ".bench.synth-old-style"  # no process id: not provably ours to remove
    other.mkdir()
    new = staging_folder_beside(tmp_path / "bench", "synth")
    assert not stale.exists() and live.exists() and other.exists() and new.is_dir()
