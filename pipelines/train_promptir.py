"""DVC stage `train_promptir`: the PromptIR baseline under Ray Tune, one run per seed; exports
checkpoints/train_promptir/seed<k>.pt."""
import sys

from pipelines.training_stage import main

if __name__ == "__main__":
    sys.exit(main("train_promptir"))
