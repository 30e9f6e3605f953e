"""DVC stage `pretrain_restoration` (pretrain/pipeline.yaml): the conditional restoration pretraining of the transformer
under Ray Tune; exports checkpoints/pretrain_restoration.pt."""
import sys

from pipelines.training_stage import main

if __name__ == "__main__":
    sys.exit(main("pretrain_restoration"))
