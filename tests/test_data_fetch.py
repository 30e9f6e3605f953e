"""Downloads: resume, checksum, interruption, atomic extraction; weights presence. Served from 127.0.0.1."""
import hashlib
import http.server
import io
import shutil
import threading
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from restorevar.cli import main
from restorevar.data import registry, weights
from restorevar.data.fetch import DownloadError, download, extract, is_complete
from restorevar.errors import UserError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Handler(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict] = {}
    cut_after: ClassVar[int | None] = None  # bytes sent before the connection is dropped (simulated failure)
    requests: ClassVar[list] = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        data = self.files.get(self.path)
        _Handler.requests.append((self.path, self.headers.get("Range")))
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut_after is not None:
            self.wfile.write(body[: self.cut_after])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    _Handler.files, _Handler.cut_after, _Handler.requests = {}, None, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()


def test_download_verifies_checksum(server, tmp_path):
    url, h = server
    h.files["/f.bin"] = PAYLOAD
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    out = download(url + "/f.bin", tmp_path / "f.bin", sha, progress=False)
    assert out.read_bytes() == PAYLOAD and not (tmp_path / "f.bin.part").exists()


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    url, h = server
    h.files["/f.bin"] = PAYLOAD
    with pytest.raises(UserError, match="checksum mismatch"):
        download(url + "/f.bin", tmp_path / "f.bin", "0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    url, h = server
    h.files["/f.bin"] = PAYLOAD
    h.cut_after = 300_000
    with pytest.raises(DownloadError, match="run again to resume"):
        download(url + "/f.bin", tmp_path / "f.bin", hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert not (tmp_path / "f.bin").exists()  # nothing that looks complete
    assert (tmp_path / "f.bin.part").stat().st_size == 300_000
    h.cut_after = None
    download(url + "/f.bin", tmp_path / "f.bin", hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert h.requests[-1] == ("/f.bin", "bytes=300000-")


def test_file_url_source_and_http_errors(tmp_path, server):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    download(src.as_uri(), tmp_path / "out" / "x.bin", hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert (tmp_path / "out" / "x.bin").read_bytes() == PAYLOAD
    url, _ = server
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(url + "/missing", tmp_path / "m.bin", progress=False)


def _zip_bytes(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def _png(seed):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_corrupt_archive_extracts_nothing(tmp_path):
    bad = tmp_path / "a.zip"
    bad.write_bytes(_zip_bytes({"x/1.png": b"1" * 1000})[:-40])
    with pytest.raises(UserError):
        extract(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_extract_never_replaces_an_existing_entry_of_the_same_name(tmp_path):
    into = tmp_path / "LOLv1"
    (into / "lol_dataset" / "our485").mkdir(parents=True)
    (into / "lol_dataset" / "our485" / "mine.png").write_bytes(b"placed by hand")
    (into / "other.txt").write_bytes(b"unrelated")
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"lol_dataset/our485/low/1.png": _png(1), "extra/2.png": _png(2)}))
    before = _tree(into)
    with pytest.raises(UserError, match=r"lol_dataset already exists and did not come from this archive"):
        extract(archive, into)
    assert _tree(into) == before and sorted(p.name for p in into.iterdir()) == ["lol_dataset", "other.txt"]


def test_an_archive_member_named_like_the_downloads_folder_deletes_nothing(server, tmp_path, monkeypatch):
    url, h = server
    archive = _zip_bytes({"_downloads/lol_dataset.zip": b"not the archive", "lol_dataset/our485/low/1.png": _png(1)})
    h.files["/lol.zip"] = archive
    _fake_lol(monkeypatch, url, hashlib.sha256(archive).hexdigest())
    assert main(["data", "fetch", "LOLv1", "--root", str(tmp_path), "--quiet"]) == 2
    downloaded = tmp_path / "LOLv1" / "_downloads" / "lol_dataset.zip"
    assert downloaded.read_bytes() == archive  # the user's download survives
    assert sorted(p.name for p in (tmp_path / "LOLv1").iterdir()) == ["_downloads"]


def test_an_archive_member_named_like_the_complete_mark_is_refused(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({".complete": b"{}", "x/1.png": _png(1)}))
    with pytest.raises(UserError, match="top-level .complete, a name fetch keeps for itself"):
        extract(archive, tmp_path / "out")
    assert not is_complete(tmp_path / "out") and list((tmp_path / "out").iterdir()) == []


def test_extracting_again_keeps_what_an_earlier_extraction_put_there(tmp_path):
    into = tmp_path / "d"
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"x/1.png": _png(1), "y/2.png": _png(2)}))
    extract(archive, into)
    (into / "x" / "1.png").write_bytes(b"edited by the user")
    extract(archive, into)  # everything is there: nothing is extracted or replaced
    assert (into / "x" / "1.png").read_bytes() == b"edited by the user"
    shutil.rmtree(into / "y")  # a fetch that stopped half-way: the missing entry comes back, the rest stays
    extract(archive, into)
    assert (into / "y" / "2.png").read_bytes() == _png(2) and (into / "x" / "1.png").read_bytes() == b"edited by the user"


def test_a_root_that_is_a_file_is_one_line(tmp_path, capsys):
    f = tmp_path / "root"
    f.write_text("x")
    assert main(["data", "fetch", "LOLv1", "--root", str(f), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file" in err[0] and f.read_text() == "x"


def _fake_lol(monkeypatch, url, sha=None):
    spec = registry.REGISTRY["LOLv1"]
    fake = registry.DatasetSpec(spec.name, spec.degradation, spec.role, spec.homepage,
                                (registry.Source("lol_dataset.zip", url + "/lol.zip", sha),), spec.layout, spec.adapter)
    monkeypatch.setitem(registry.REGISTRY, "LOLv1", fake)


def test_fetch_downloads_extracts_adapts_and_marks_complete(server, tmp_path, monkeypatch):
    url, h = server
    # distinct pictures in each split: `data check --against` finds a test image repeated in training
    files = {f"lol_dataset/{s}/{d}/{i}.png": _png(i + 10 * (d == "high") + 100 * (s == "eval15"))
             for s in ("our485", "eval15") for d in ("low", "high") for i in range(2)}
    archive = _zip_bytes(files)
    h.files["/lol.zip"] = archive
    spec = registry.REGISTRY["LOLv1"]
    fake = registry.DatasetSpec(spec.name, spec.degradation, spec.role, spec.homepage,
                                (registry.Source("lol_dataset.zip", url + "/lol.zip", hashlib.sha256(archive).hexdigest()),),
                                spec.layout, spec.adapter)
    monkeypatch.setitem(registry.REGISTRY, "LOLv1", fake)
    assert main(["data", "fetch", "LOLv1", "--root", str(tmp_path), "--quiet"]) == 0
    assert is_complete(tmp_path / "LOLv1")
    assert main(["data", "check", str(tmp_path / "LOLv1" / "train.json"),
                 "--against", str(tmp_path / "LOLv1" / "test.json")]) == 0
    # a second run finds it complete and does not download again
    n = len(h.requests)
    assert main(["data", "fetch", "LOLv1", "--root", str(tmp_path), "--quiet"]) == 0
    assert len(h.requests) == n


def test_failed_download_never_looks_complete(server, tmp_path, monkeypatch):
    url, h = server
    h.files["/lol.zip"] = _zip_bytes({"lol_dataset/our485/low/1.png": _png(1)})
    h.cut_after = 100
    spec = registry.REGISTRY["LOLv1"]
    fake = registry.DatasetSpec(spec.name, spec.degradation, spec.role, spec.homepage,
                                (registry.Source("lol_dataset.zip", url + "/lol.zip"),), spec.layout, spec.adapter)
    monkeypatch.setitem(registry.REGISTRY, "LOLv1", fake)
    assert main(["data", "fetch", "LOLv1", "--root", str(tmp_path), "--quiet"]) == 1
    folder = tmp_path / "LOLv1"
    assert not is_complete(folder) and not (folder / "train.json").exists()
    assert not (folder / "_downloads" / "lol_dataset.zip").exists()


# -- weights -----------------------------------------------------------------------------------
def _fake_weights(monkeypatch, tmp_path, url_base):
    blobs = {"a": b"alpha" * 100, "b": b"beta" * 100}
    specs = (
        weights.WeightSpec("a", "hub/pyiqa/a.pth", f"{url_base}/a.pth", hashlib.sha256(blobs["a"]).hexdigest(),
                           needed_by=("lpips",)),
        weights.WeightSpec("b", "hub/clip/b.pt", f"{url_base}/b.pt", size=len(blobs["b"]), needed_by=("clipiqa",)),
    )
    monkeypatch.setattr(weights, "WEIGHTS", specs)
    monkeypatch.setattr(weights, "BY_NAME", {s.name: s for s in specs})
    return blobs


def test_fetch_weights_offline_reports_and_fails(tmp_path, monkeypatch, capsys):
    _fake_weights(monkeypatch, tmp_path, "http://127.0.0.1:9")  # nothing listens on port 9
    rc = main(["data", "fetch-weights", "--cache", str(tmp_path), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 1 and "missing" in out and "0/2 weight files present" in err
    avail = weights.metric_availability(tmp_path)
    assert avail["lpips"][0] is False and "unavailable: weights not cached" in avail["lpips"][1]


def test_fetch_weights_downloads_verifies_and_enables_metrics(server, tmp_path, monkeypatch, capsys):
    url, h = server
    blobs = _fake_weights(monkeypatch, tmp_path, url)
    h.files["/a.pth"], h.files["/b.pt"] = blobs["a"], blobs["b"]
    assert main(["data", "fetch-weights", "--cache", str(tmp_path), "--quiet"]) == 0
    assert (tmp_path / "hub/pyiqa/a.pth").read_bytes() == blobs["a"]
    avail = weights.metric_availability(tmp_path, check_hashes=True)
    assert avail["lpips"] == (True, "available") and avail["clipiqa"][0]
    # a corrupted cached file is reported as bad, not silently used
    (tmp_path / "hub/pyiqa/a.pth").write_bytes(b"tampered")
    assert main(["data", "fetch-weights", "--cache", str(tmp_path), "--quiet"]) == 1
    assert "bad" in capsys.readouterr().out
    assert weights.metric_availability(tmp_path, check_hashes=True)["lpips"][0] is False


def test_real_weight_registry_is_complete():
    names = {w.name for w in weights.WEIGHTS}
    assert names == {"alexnet", "lpips_alex", "musiq_koniq", "clip_rn50", "var_vae", "var_d16"}
    for w in weights.WEIGHTS:
        assert w.url.startswith("https://") and (w.sha256 or w.sha256_prefix)
        if w.sha256_prefix is None:
            assert len(w.sha256) == 64
        name_hash = Path(w.relpath).stem.rsplit("-", 1)[-1]
        if len(name_hash) == 8 and w.sha256:  # pyiqa/torchvision embed the hash prefix in the file name
            assert w.sha256.startswith(name_hash)
