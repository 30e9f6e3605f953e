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


@pytest.mark.parametrize(("manifest", "needle"), [
    ({"checkpoints": {"vae_ch160v4096z32": {"encoder.conv_in.weight": [160, -3, 3, 3]}}},
     "key 'encoder.conv_in.weight' has shape [160, -3, 3, 3]; a shape must be a list of non-negative integers"),
    ({"checkpoints": {"vae_ch160v4096z32": {"k": [2.5]}}}, "has shape [2.5]"),
    ({"checkpoints": {"vae_ch160v4096z32": {"k": [True]}}}, "has shape [true]"),
    ({"checkpoints": {"vae_ch160v4096z32": {"k": 7}}}, "has shape 7"),
    ({"checkpoints": {"vae_ch160v4096z32": [1, 2]}}, "maps to a list, not {key: shape}"),
    ({"checkpoints": ["vae_ch160v4096z32"]}, "'checkpoints' is a list"),
    ([1, 2], "is not a checkpoint shape manifest"),
])
def test_malformed_manifests_are_one_line(manifest, needle, tmp_path, capsys):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest))
    assert main(["convert-official", "--check-manifest", str(path), "--preset", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and err.count("\n") == 0


def test_manifest_that_is_a_folder_or_fifo_is_refused(tmp_path, capsys):
    (tmp_path / "d.json").mkdir()
    targets = [tmp_path / "d.json"]
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "p.json")  # reading it would block
        targets.append(tmp_path / "p.json")
    for t in targets:
        assert main(["convert-official", "--check-manifest", str(t)]) == 2
        assert "is not a regular file" in capsys.readouterr().err


def test_report_and_out_are_checked_before_converting(tmp_path, capsys):
    vae = tmp_path / "vae.pth"
    vae.write_bytes(b"original weights")
    (tmp_path / "reports").mkdir()
    cases = [
        (["--vae", str(vae), "--out", str(vae)], "is the --vae input itself"),
        (["--vae", str(vae), "--out", str(tmp_path / "reports")], "reports is a folder; give a file name"),
        (["--vae", str(vae), "--out", str(tmp_path / "o.pt"), "--report", str(vae)], "--report " + str(vae) + " is the --vae"),
        (["--check-manifest", "/no/such.json", "--report", str(tmp_path / "reports")], "is a folder; give a file name"),
    ]
    for args, needle in cases:
        assert main(["convert-official", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and err.count("\n") == 0, err
    assert vae.read_bytes() == b"original weights"


@pytest.mark.parametrize("args", [["--help"], ["regress", "--help"], ["regress", "--baseline", "b.json"], ["nope"],
                                  ["data", "synth", "--help"], ["stats", "compare", "--help"]])
def test_help_and_usage_errors_load_no_torch_scipy_or_albumentations(args):
    """Only the command being run builds its arguments, so these answer in a fraction of a second."""
    code = ("import sys\nfrom restorevar.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted({'torch', 'scipy', 'albumentations'} & set(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False,
                       env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout + r.stderr


def test_every_command_is_listed_and_the_whole_parser_still_builds(capsys):
    from restorevar.cli import COMMANDS, build_parser

    with pytest.raises(SystemExit):
        main(["--help"])
    listing = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    assert all(f"{name} {help}" in listing for name, (help, _) in COMMANDS.items())
    whole = build_parser()  # every command's arguments, as before
    assert whole.parse_args(["bench", "--preset", "tiny"]).preset == "tiny"
    assert whole.parse_args(["regress", "--baseline", "a", "--current", "b"]).func.__name__ == "cmd_regress"
    with pytest.raises(SystemExit):
        main(["restore", "--help"])
    assert "--max-pixels" in capsys.readouterr().out  # the command run gets its arguments
