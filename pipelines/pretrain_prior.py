"""DVC stage `pretrain_prior` (pretrain/pipeline.yaml): runs the trainer under Ray Tune; exports checkpoints/pretrain_prior.pt."""
import sys

from pipelines.training_stage import main

if __name__ == "__main__":
    sys.exit(main("pretrain_prior"))
