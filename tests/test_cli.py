"""The ``restorevar`` command: JSON info, and one-line errors with exit code 2."""
import json
import os
import subprocess
import sys

import pytest

from restorevar.cli import main


def test_info_json_reports_the_paper_model(capsys):
    assert main(["info", "--preset", "paper", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["patch_nums"] == [1, 2, 3, 4, 6, 9, 13, 18, 24, 32]
    assert info["n_tokens"] == 2240
    assert info["latent_size"] == [32, 32, 32]
    assert info["params_M"]["transformer"] == pytest.approx(273.986, abs=0.001)
    assert info["params_M"]["refiner"] == pytest.approx(22.968, abs=0.001)
    assert info["params_M"]["vqvae"] == pytest.approx(108.948, abs=0.001)
    assert info["params"]["vqvae_encoder"] + info["params"]["vqvae_decoder"] + info["params"]["vqvae_quantizer"] \
        == info["params"]["vqvae"]


def test_info_applies_overrides(capsys):
    assert main(["info", "--preset", "tiny", "--json", "--set", "transformer.positions=ape",
                 "--set", "refiner.kind=none"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["positions"] == "ape" and info["refiner"] == "none" and info["params"]["refiner"] == 0


def _run(*args):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run([sys.executable, "-m", "restorevar", *args], capture_output=True, text=True, env=env, check=False)


@pytest.mark.parametrize("args,needle", [
    (["info", "--preset", "huge"], "unknown preset 'huge'"),
    (["info", "--set", "transformer.depth=deep"], "expected an integer"),
    (["info", "--set", "transformer.positions=alibi"], "is not one of"),
    (["info", "--set", "transformer.detph=3"], "unknown key 'detph'"),
    (["convert-official", "--check-manifest", "/no/such/manifest.json"], "manifest not found"),
    (["convert-official", "--vae", "/no/such/vae.pth", "--out", "x.pt"], "checkpoint not found"),
    (["convert-official"], "nothing to convert"),
    (["info", "--no-such-flag"], "unrecognized arguments"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    r = _run(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_truncated_checkpoint_is_reported(tmp_path):
    bad = tmp_path / "vae.pth"
    bad.write_bytes(b"PK\x03\x04 truncated")
    r = _run("convert-official", "--vae", str(bad), "--out", str(tmp_path / "o.pt"))
    assert r.returncode == 2 and "corrupt or truncated" in r.stderr and len(r.stderr.strip().splitlines()) == 1
