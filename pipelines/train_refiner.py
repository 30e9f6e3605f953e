"""DVC stage `train_refiner`: runs the trainer under Ray Tune; exports checkpoints/train_refiner.pt."""
import sys

from pipelines.training_stage import main

if __name__ == "__main__":
    sys.exit(main("train_refiner"))
