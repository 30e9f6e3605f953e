"""One rank of a data-parallel training run, started by torchrun: ``torchrun --nproc-per-node N ddp_worker.py
JOB.json``. JOB names the trainer, its config, the run folder, where rank 0 writes what it reported, and
optionally a step after whose checkpoint every rank exits at once (a kill between two checkpoints)."""
import json
import os
import sys

import torch
import torch.distributed as dist

from restorevar.config import from_dict
from restorevar.train.distributed import Ranks

TRAINERS = {"transformer": ("restorevar.train.transformer", "TransformerTrainConfig", "train_transformer"),
            "tokenizer": ("restorevar.train.tokenizer", "TokenizerTrainConfig", "train_tokenizer")}


def main(job_path: str) -> None:
    import importlib

    with open(job_path) as f:
        job = json.load(f)
    torch.set_num_threads(job["threads"])
    dist.init_process_group("gloo")
    mod, cls, fn = TRAINERS[job["trainer"]]
    m = importlib.import_module(mod)
    rows = []

    def report(step, metrics, checkpoint=None):
        rows.append([step, metrics])
        if job.get("exit_after") is not None and step >= job["exit_after"] and step % job["config"]["loop"]["ckpt_every"] == 0:
            # Rank 0 reports only after writing the checkpoint, while the other ranks get here at once: without
            # the barrier a rank that exits first makes torchrun kill rank 0 mid-save, and the run stops a
            # checkpoint early. Then every rank exits with no clean shutdown, as under a kill.
            dist.barrier()
            os._exit(3)

    getattr(m, fn)(from_dict(getattr(m, cls), job["config"]), job["run_dir"], report)
    if Ranks.current().leader:
        with open(job["out"], "w") as f:
            json.dump(rows, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
