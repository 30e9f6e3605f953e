"""DVC stage `train_tokenizer`: runs the trainer under Ray Tune; exports checkpoints/train_tokenizer.pt."""
import sys

from pipelines.training_stage import main

if __name__ == "__main__":
    sys.exit(main("train_tokenizer"))
