"""DVC stage `train_transformer`: runs the trainer under Ray Tune; exports checkpoints/train_transformer.pt."""
import sys

from pipelines.training_stage import main

if __name__ == "__main__":
    sys.exit(main("train_transformer"))
