"""`restorevar convert-official`: malformed shape manifests and output paths that would destroy an input."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from bad_inputs import Case


def _manifest(checkpoints) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "shapes.json").write_text(json.dumps({"checkpoints": checkpoints}))
        return ["convert-official", "--check-manifest", "shapes.json", "--preset", "tiny"]
    return setup


def _manifest_is_a_folder(tmp: Path) -> list[str]:
    (tmp / "shapes.json").mkdir()
    return ["convert-official", "--check-manifest", "shapes.json"]


def _raw_manifest(text: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "shapes.json").write_text(text)
        return ["convert-official", "--check-manifest", "shapes.json", "--preset", "tiny"]
    return setup


def _weights(tmp: Path) -> Path:
    (tmp / "vae.pth").write_bytes(b"the only copy of the published weights")
    return tmp / "vae.pth"


def _out_is_the_input(tmp: Path) -> list[str]:
    _weights(tmp)
    return ["convert-official", "--vae", "vae.pth", "--out", "vae.pth", "--preset", "tiny"]


def _report_is_the_input(tmp: Path) -> list[str]:
    _weights(tmp)
    return ["convert-official", "--vae", "vae.pth", "--out", "ours.pt", "--report", "vae.pth", "--preset", "tiny"]


def _report_is_the_manifest(tmp: Path) -> list[str]:
    (tmp / "shapes.json").write_text(json.dumps({"checkpoints": {}}))
    return ["convert-official", "--check-manifest", "shapes.json", "--report", "./shapes.json", "--preset", "tiny"]


def _report_is_a_folder(tmp: Path) -> list[str]:
    (tmp / "reports").mkdir()
    return ["convert-official", "--check-manifest", "shapes.json", "--report", "reports"]


def _seed_beyond_64_bits(tmp: Path) -> list[str]:
    _weights(tmp)
    return ["convert-official", "--var", "vae.pth", "--out", "ours.pt", "--seed", str(2**64), "--preset", "tiny"]


def _out_under_a_file(tmp: Path) -> list[str]:
    _weights(tmp)
    (tmp / "notes.txt").write_text("mine")
    return ["convert-official", "--vae", "vae.pth", "--out", "notes.txt/ours.pt", "--preset", "tiny"]


CASES = [
    Case("convert-report-is-the-manifest", _report_is_the_manifest, "is the manifest being checked"),
    Case("convert-manifest-negative-shape",
         _manifest({"vae_ch160v4096z32": {"encoder.conv_in.weight": [160, 3, -3, 3]}}),
         "key 'encoder.conv_in.weight' has shape [160, 3, -3, 3]; a shape must be a list of non-negative integers"),
    Case("convert-manifest-fractional-shape", _manifest({"vae_ch160v4096z32": {"quant_conv.bias": [32.5]}}),
         "has shape [32.5]; a shape must be a list of non-negative integers"),
    Case("convert-manifest-shape-not-a-list", _manifest({"vae_ch160v4096z32": {"quant_conv.bias": "32"}}),
         "has shape \"32\""),
    Case("convert-manifest-checkpoint-not-a-mapping", _manifest({"vae_ch160v4096z32": [[32]]}),
         "checkpoint 'vae_ch160v4096z32' maps to a list, not {key: shape}"),
    Case("convert-manifest-checkpoints-a-list", _manifest(["vae_ch160v4096z32"]), "'checkpoints' is a list"),
    Case("convert-manifest-is-a-folder", _manifest_is_a_folder, "manifest shapes.json is not a regular file"),
    Case("convert-out-is-the-input", _out_is_the_input, "--out vae.pth is the --vae input itself"),
    Case("convert-report-is-the-input", _report_is_the_input, "--report vae.pth is the --vae input itself"),
    Case("convert-report-is-a-folder", _report_is_a_folder, "--report reports is a folder; give a file name"),
    Case("convert-seed-beyond-64-bits", _seed_beyond_64_bits, "--seed must fit in 64 bits"),
    Case("convert-out-under-a-file", _out_under_a_file, "cannot write --out notes.txt/ours.pt: "),
    Case("convert-manifest-5000-digit-integer",
         _raw_manifest('{"checkpoints": {"vae_ch160v4096z32": {"quant_conv.bias": [' + "9" * 5000 + ']}}}'),
         "is not a checkpoint shape manifest"),
    Case("convert-manifest-nested-too-deep", _raw_manifest("[" * 100000 + "]" * 100000),
         "is not a checkpoint shape manifest"),
]
