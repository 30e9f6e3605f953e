"""`restorevar restore`: any image size (resize or tiling), folders, progress, and bad inputs."""
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tiny
from restorevar.checkpoint import save_checkpoint
from restorevar.cli import main
from restorevar.inference import RestoreOptions, Restorer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    m = make_tiny(gains=0.5)
    path = tmp_path_factory.mktemp("ck") / "train_refiner.pt"
    save_checkpoint(path, config=m.cfg, components={"vqvae": m.vqvae.state_dict(),
                    "transformer": m.transformer.state_dict(), "refiner": m.refiner.state_dict()})
    return path


def _photo(w, h, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], -1) * 200 + rng.integers(0, 40, (h, w, 3))
    return Image.fromarray(base.astype(np.uint8))


@pytest.mark.parametrize("mode", ["resize", "tile"])
@pytest.mark.parametrize("size", [(50, 37), (70, 45), (20, 13)])
def test_output_keeps_the_input_size(ckpt, mode, size):
    out = Restorer(ckpt, RestoreOptions(mode=mode, device="cpu")).restore_image(_photo(*size))
    assert out.size == size and out.mode == "RGB"


def test_tiles_blend_without_seams(ckpt, monkeypatch):
    """With an identity model, tiling must reproduce the image exactly (up to 8-bit rounding)."""
    r = Restorer(ckpt, RestoreOptions(mode="tile", overlap=0.25, batch_size=3, device="cpu"))

    class Identity:
        def restore(self, x, **kw):
            return type("O", (), {"image_B3HW": x})()

    monkeypatch.setattr(r, "engine", Identity())
    img = _photo(83, 61)
    out = np.asarray(r.restore_image(img)).astype(int)
    assert np.abs(out - np.asarray(img).astype(int)).max() <= 1


def test_cli_restores_folders_skips_corrupt_files_and_exits_1(ckpt, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _photo(40, 30).save(src / "a.png")
    _photo(64, 64, 1).save(src / "b.jpg")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (src / "notes.txt").write_text("ignored")
    rc = main(["restore", str(src), "--checkpoint", str(ckpt.parent), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "skipped" in err and "broken.png" in err and "restored 2/3" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    assert Image.open(tmp_path / "out" / "a.png").size == (40, 30)


def test_cli_same_seed_same_pixels(ckpt, tmp_path):
    _photo(32, 32).save(tmp_path / "x.png")
    outs = []
    for k in range(2):
        assert main(["restore", str(tmp_path / "x.png"), "--checkpoint", str(ckpt), "--out", str(tmp_path / f"o{k}"),
                     "--top-k", "5", "--seed", "3", "--quiet"]) == 0
        outs.append((tmp_path / f"o{k}" / "x.png").read_bytes())
    assert outs[0] == outs[1]


@pytest.mark.parametrize(("args", "needle"), [
    (["--checkpoint", "/nope/model.pt"], "checkpoint not found"),
    (["--checkpoint", "{tmp}"], "no checkpoint in"),
    (["--checkpoint", "{partial}"], "lacks"),
    (["--checkpoint", "{ckpt}", "--overlap", "1.5", "--mode", "tile"], "overlap"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, needle, ckpt, tmp_path, capsys):
    partial = tmp_path / "tok.pt"
    m = make_tiny()
    save_checkpoint(partial, config=m.cfg, components={"vqvae": m.vqvae.state_dict()})
    _photo(32, 32).save(tmp_path / "x.png")
    args = [a.format(tmp=tmp_path / "empty", partial=partial, ckpt=ckpt) for a in args]
    (tmp_path / "empty").mkdir()
    rc = main(["restore", str(tmp_path / "x.png"), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and err.count("\n") == 0


def test_cli_plain_and_fast_paths_agree(ckpt, tmp_path):
    """The fast path (default) and --plain predict the same tokens in fp32: the PNGs differ by rounding at most."""
    _photo(48, 40).save(tmp_path / "x.png")
    outs = {}
    for flag in ([], ["--plain"]):
        out = tmp_path / ("plain" if flag else "fast")
        assert main(["restore", str(tmp_path / "x.png"), "--checkpoint", str(ckpt), "--out", str(out), "--quiet",
                     *flag]) == 0
        outs[out.name] = np.asarray(Image.open(out / "x.png")).astype(int)
    assert np.abs(outs["fast"] - outs["plain"]).max() <= 1


def test_cli_bf16_refuses_the_plain_path(ckpt, tmp_path, capsys):
    _photo(32, 32).save(tmp_path / "x.png")
    rc = main(["restore", str(tmp_path / "x.png"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"),
               "--plain", "--dtype", "bf16"])
    assert rc == 2 and "plain path runs in fp32 only" in capsys.readouterr().err


def test_no_images_found_is_an_error(ckpt, tmp_path, capsys):
    assert main(["restore", str(tmp_path), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    assert "no images found" in capsys.readouterr().err


def test_seeded_restore_is_deterministic_on_cpu(ckpt):
    torch.manual_seed(0)
    r = Restorer(ckpt, RestoreOptions(device="cpu"))
    a = np.asarray(r.restore_image(_photo(32, 32)))
    b = np.asarray(r.restore_image(_photo(32, 32)))
    assert (a == b).all()
