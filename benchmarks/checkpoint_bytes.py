"""Does a change keep training bit for bit? Trains every trainer a few steps on the tiny and cpu (default
profile) presets with the working tree's library and with REV's, in the same folder, and names the
checkpoint entries that differ.

    python benchmarks/checkpoint_bytes.py REV          # e.g. HEAD~3; REV is checked out in a temporary worktree

A refactor or a new option that is off by default should print "identical" everywhere; a checkpoint format
change shows up as the entry it adds. CPU only: GPU kernels are not bit-stable between runs anyway.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("tok", "dec", "tr", "ref")


def train_all(out: Path) -> dict[str, dict[str, str]]:
    """Each trainer 3 steps per preset in ``out``; the digest of every checkpoint entry (meta's and extra's keys
    apart). Uses whichever ``restorevar`` is first on sys.path."""
    import torch

    from restorevar.checkpoint import load_checkpoint
    from restorevar.config import from_dict
    from restorevar.data.synth import SynthConfig, synth
    from restorevar.train.decoder import DecoderTrainConfig, train_decoder
    from restorevar.train.refiner import RefinerTrainConfig, train_refiner
    from restorevar.train.tokenizer import TokenizerTrainConfig, train_tokenizer
    from restorevar.train.transformer import TransformerTrainConfig, train_transformer

    synth(out / "synth", SynthConfig(size=64, train_per_degradation=4, test_per_degradation=1), progress=False)
    manifest = str(out / "synth" / "train.json")

    def digest(obj) -> str:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return hashlib.sha256(buf.getvalue()).hexdigest()[:12]

    result = {}
    for preset, crop in (("tiny", 32), ("cpu", 64)):
        d = out / preset

        def cfg(cls, preset=preset, crop=crop, **kw):
            loop = {"steps": 3, "batch_size": 4, "ckpt_every": 2, "log_every": 1, "eval_every": 2, "val_batches": 1,
                    "device": "cpu"}
            return from_dict(cls, {"model": {"preset": preset}, "data": {"train_manifest": manifest, "crop": crop},
                                   "loop": loop, **kw})

        train_tokenizer(cfg(TokenizerTrainConfig, restart_dead_codes_every=2), d / "tok")
        tok = str(d / "tok" / "last.pt")
        train_decoder(cfg(DecoderTrainConfig, tokenizer_checkpoint=tok, perceptual_weight=0.0, discriminator_start=1),
                      d / "dec")
        train_transformer(cfg(TransformerTrainConfig, tokenizer_checkpoint=tok), d / "tr")
        train_refiner(cfg(RefinerTrainConfig, decoder_checkpoint=str(d / "dec" / "last.pt"),
                          transformer_checkpoint=str(d / "tr" / "last.pt")), d / "ref")
        for part in PARTS:
            path = d / part / "last.pt"
            ck = load_checkpoint(path)
            entries = {"file": hashlib.sha256(path.read_bytes()).hexdigest()[:12]}
            entries.update({k: digest(v) for k, v in ck.items() if k != "meta"})
            entries.update({f"meta.{k}": digest(v) for k, v in ck["meta"].items() if k != "extra"})
            entries.update({f"meta.extra.{k}": digest(v) for k, v in ck["meta"].get("extra", {}).items()})
            result[f"{preset}/{part}"] = entries
    return result


def _run(lib: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    r = subprocess.run([sys.executable, __file__, "--train", str(out), "--lib", str(lib)], env=env,
                       capture_output=True, text=True, check=False)
    lines = [x for x in r.stdout.splitlines() if x.startswith("DIGESTS ")]
    if r.returncode or not lines:
        sys.exit(f"checkpoint_bytes: training with {lib} failed:\n{r.stderr[-3000:]}")
    return json.loads(lines[-1][len("DIGESTS "):])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", nargs="?", help="the git revision to compare the working tree with")
    ap.add_argument("--train", type=Path, help=argparse.SUPPRESS)  # the worker: train in this folder
    ap.add_argument("--lib", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.train:
        sys.path.insert(0, str(a.lib))
        print("DIGESTS " + json.dumps(train_all(a.train)))
        return 0
    if not a.rev:
        ap.error("give the revision to compare with, e.g. HEAD~1")
    with tempfile.TemporaryDirectory(prefix="checkpoint_bytes-") as tmp:
        tree = Path(tmp) / "rev"
        r = subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tree), a.rev], cwd=ROOT,
                           capture_output=True, text=True, check=False)
        if r.returncode:
            print(f"checkpoint_bytes: error: cannot check out {a.rev!r}: {r.stderr.strip()}", file=sys.stderr)
            return 2
        try:
            out = Path(tmp) / "run"  # one folder for both: the configs the checkpoints record name it
            old = _run(tree, out)
            shutil.rmtree(out)
            new = _run(ROOT, out)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True, check=False)
    for key in old:
        if old[key]["file"] == new[key]["file"]:
            print(f"{key:10s} identical")
        else:
            changed = sorted(k for k in set(old[key]) | set(new[key]) if k != "file" and old[key].get(k) != new[key].get(k))
            print(f"{key:10s} differs: {', '.join(changed) or 'only the archive around the same entries'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
