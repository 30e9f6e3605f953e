"""`python -m pipelines.validate --params PATH` on broken copies of the project's params.yaml.

Every profile's column is checked, not only the chosen one's, so a broken `paper` column fails too.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bad_inputs import Case

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _edited(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        raw = yaml.safe_load(PARAMS.read_text())
        edit(raw)
        path = tmp / "params.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return ["--params", str(path)]
    return setup


def _text(text: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "params.yaml").write_text(text)
        return ["--params", str(tmp / "params.yaml")]
    return setup


def _set(section: str, profile: str, dotted: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        node = raw[section][profile]
        *parents, key = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[key] = value
    return edit


CASES = [
    Case("validate-lr-nan", _edited(_set("train_tokenizer", "default", "loop.lr", float("nan"))),
         "train_tokenizer.default.loop.lr: expected a finite number, got nan", entry="validate"),
    Case("validate-weight-inf", _edited(_set("finetune_decoder", "default", "perceptual_weight", float("inf"))),
         "finetune_decoder.default.perceptual_weight: expected a finite number, got inf", entry="validate"),
    Case("validate-paper-column-nan", _edited(_set("train_refiner", "paper", "loop.lr", float("nan"))),
         "train_refiner.paper.loop.lr: expected a finite number", entry="validate"),
    Case("validate-data-size-7", _edited(_set("data", "default", "size", 7)),
         "data.default.size must be between 16 and 1024", entry="validate"),
    Case("validate-crop-larger-than-data",  # the crop of fixed pairs (pairs drawn on the fly crop whole photos)
         _edited(lambda raw: (_set("data", "default", "size", 48)(raw),
                              _set("train_tokenizer", "default", "data.pairs", "manifest")(raw))),
         "train_tokenizer.default.data.crop 64 is larger than the 48 px synthetic images", entry="validate"),
    Case("validate-section-null", _edited(lambda raw: raw.update(evaluate=None)),
         "section 'evaluate' is empty (null)", entry="validate"),
    Case("validate-profile-entry-null", _edited(lambda raw: raw["stats"].update(default=None)),
         "stats.default is empty (null)", entry="validate"),
    Case("validate-string-for-number", _edited(_set("train_transformer", "default", "loop.batch_size", "eight")),
         "train_transformer.default.loop.batch_size: expected an integer, got 'eight'", entry="validate"),
    Case("validate-unknown-key", _edited(_set("bench", "default", "repeatz", 5)),
         "unknown config key(s) bench.default.repeatz", entry="validate"),
    Case("validate-not-yaml", _text("profile: [default\n"), "is not valid YAML", entry="validate"),
    Case("validate-missing-file", lambda tmp: ["--params", str(tmp / "nowhere.yaml")], "params file not found",
         entry="validate"),
]
