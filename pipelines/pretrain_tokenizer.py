"""DVC stage `pretrain_tokenizer` (pretrain/pipeline.yaml): runs the trainer under Ray Tune; exports checkpoints/pretrain_tokenizer.pt."""
import sys

from pipelines.training_stage import main

if __name__ == "__main__":
    sys.exit(main("pretrain_tokenizer"))
