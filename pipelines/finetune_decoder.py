"""DVC stage `finetune_decoder`: runs the trainer under Ray Tune; exports checkpoints/finetune_decoder.pt."""
import sys

from pipelines.training_stage import main

if __name__ == "__main__":
    sys.exit(main("finetune_decoder"))
