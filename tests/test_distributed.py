"""Data-parallel training (restorevar.train.distributed) on the tiny preset, with ranks started by torchrun on
gloo: two ranks follow a single process with the same global batch, one rank writes a single process's
bytes, and a run killed between checkpoints resumes every rank."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from restorevar.checkpoint import load_checkpoint
from restorevar.config import from_dict
from restorevar.data.synth import SynthConfig, synth
from restorevar.errors import UserError
from restorevar.train.common import CKPT_NAME
from restorevar.train.distributed import Ranks
from restorevar.train.tokenizer import TokenizerTrainConfig, train_tokenizer
from restorevar.train.transformer import TransformerTrainConfig, train_transformer

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    synth(out / "synth", SynthConfig(size=32, train_per_degradation=8, test_per_degradation=1), progress=False)
    manifest = str(out / "synth" / "train.json")
    train_tokenizer(from_dict(TokenizerTrainConfig, _config(manifest, 2)), out / "tok")
    return manifest, str(out / "tok" / CKPT_NAME)


def _config(manifest, steps, **kw):
    loop = {"steps": steps, "batch_size": 4, "lr": 2e-3, "ckpt_every": 2, "log_every": 1, "eval_every": steps,
            "val_batches": 1, "flat_fraction": 1.0, "device": "cpu"}
    return {"model": {"preset": "tiny"}, "data": {"train_manifest": manifest, "crop": 32}, "loop": loop, **kw}


def _torchrun(tmp: Path, ranks: int, trainer: str, config: dict, run_dir: Path, exit_after=None) -> list:
    job = {"trainer": trainer, "config": config, "run_dir": str(run_dir), "out": str(tmp / f"rows-{run_dir.name}.json"),
           "exit_after": exit_after, "threads": torch.get_num_threads()}  # as here: the float sums' order
    (tmp / "job.json").write_text(json.dumps(job))
    with socket.socket() as s:  # a free port on loopback for the ranks' rendezvous (torchrun takes no port 0)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
                        "--master-addr", "127.0.0.1", "--master-port", str(port), str(WORKER), str(tmp / "job.json")],
                       check=False, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)})  # torchrun's logs: not in /tmp
    if exit_after is not None:
        assert p.returncode != 0, "the run was meant to stop after its checkpoint"
        return []
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(Path(job["out"]).read_text())


def _single(config: dict, run_dir: Path) -> list:
    rows = []
    train_transformer(from_dict(TransformerTrainConfig, config), run_dir,
                      lambda step, metrics, checkpoint=None: rows.append([step, dict(metrics)]))
    return rows


def test_two_ranks_follow_one_process_with_the_same_global_batch(setup, tmp_path):
    manifest, tok = setup
    cfg = _config(manifest, 6, tokenizer_checkpoint=tok)
    one = _single(cfg, tmp_path / "one")
    two = _torchrun(tmp_path, 2, "transformer", cfg, tmp_path / "two")
    assert [s for s, _ in two] == [s for s, _ in one]
    for key in ("loss", "acc", "grad_norm"):
        a, b = [m[key] for _, m in one], [m[key] for _, m in two]
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6), key
    assert one[-1][1]["val_acc"] == pytest.approx(two[-1][1]["val_acc"], abs=1e-6)  # rank 0 evaluates the same
    w1 = load_checkpoint(tmp_path / "one" / CKPT_NAME)["components"]["transformer"]
    w2 = load_checkpoint(tmp_path / "two" / CKPT_NAME)["components"]["transformer"]
    for k in w1:
        assert torch.allclose(w1[k], w2[k], rtol=1e-4, atol=1e-5), k
    # one checkpoint series, the one rank 0 writes
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [CKPT_NAME]


def test_one_rank_writes_the_bytes_of_one_process(setup, tmp_path):
    manifest, tok = setup
    cfg = _config(manifest, 4, tokenizer_checkpoint=tok)
    _single(cfg, tmp_path / "plain")
    _torchrun(tmp_path, 1, "transformer", cfg, tmp_path / "rank")
    assert (tmp_path / "plain" / CKPT_NAME).read_bytes() == (tmp_path / "rank" / CKPT_NAME).read_bytes()


def test_two_ranks_killed_between_checkpoints_resume_to_the_same_bytes(setup, tmp_path):
    """The tokenizer: code restarts broadcast from rank 0, a usage average kept over the ranks, a running
    count, and random draws per rank (seeded per step)."""
    manifest, _ = setup
    cfg = _config(manifest, 6, restart_dead_codes_every=3, dead_code_threshold=1e9)  # every code restarts
    whole = _torchrun(tmp_path, 2, "tokenizer", cfg, tmp_path / "whole")
    _torchrun(tmp_path, 2, "tokenizer", cfg, tmp_path / "cut", exit_after=4)
    assert load_checkpoint(tmp_path / "cut" / CKPT_NAME)["step"] == 4
    resumed = _torchrun(tmp_path, 2, "tokenizer", cfg, tmp_path / "cut")
    assert [s for s, _ in resumed[:2]] == [4, 5] and resumed[-1][1]["loss"] == whole[-1][1]["loss"]
    assert whole[-1][1]["codes_restarted"] > 0
    assert (tmp_path / "whole" / CKPT_NAME).read_bytes() == (tmp_path / "cut" / CKPT_NAME).read_bytes()


def test_a_batch_the_ranks_cannot_share_equally_is_a_clear_error():
    assert Ranks(1, 2).part(4) == slice(2, 4) and Ranks().part(5) == slice(0, 5)
    with pytest.raises(UserError, match="multiple of the 3 workers"):
        Ranks(0, 3).part(4)
