"""`python -m pipelines.validate --params PATH` on broken copies of the project's params.yaml.

Every profile's column is checked, not only the chosen one's, so a broken `paper` column fails too.
"""
from __future__ import annotations

import json
import os
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


def _dumped(edit: Callable[[dict[str, Any]], None] = lambda raw: None) -> str:
    raw = yaml.safe_load(PARAMS.read_text())
    edit(raw)
    return yaml.safe_dump(raw, sort_keys=False)


def _written(make_text: Callable[[], str]) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "params.yaml").write_text(make_text())
        return ["--params", str(tmp / "params.yaml")]
    return setup


def _literal(section: str, profile: str, dotted: str, text: str) -> Callable[[], str]:
    """The params with one value written as ``text`` verbatim (a literal no YAML dumper would write)."""
    def make() -> str:
        dumped = _dumped(_set(section, profile, dotted, "LITERAL_VALUE"))
        assert dumped.count("LITERAL_VALUE") == 1
        return dumped.replace("LITERAL_VALUE", text)
    return make


def _duplicate_key() -> str:
    """train_transformer.default.loop.steps written twice (block style, as people write it)."""
    lines = _dumped().splitlines(keepends=True)
    at = lines.index("train_transformer:\n")
    at += next(i for i, line in enumerate(lines[at:]) if line.startswith("      steps: "))
    return "".join(lines[:at + 1] + ["      steps: 8000\n"] + lines[at + 1:])


def _null_key() -> str:
    """``null:`` written as a key of train_transformer.default.loop: YAML reads it as None, not as a name."""
    lines = _dumped().splitlines(keepends=True)
    at = lines.index("train_transformer:\n")
    at += next(i for i, line in enumerate(lines[at:]) if line.startswith("      steps: "))
    return "".join(lines[:at] + ["      null: 1\n"] + lines[at:])


def _duplicate_section() -> str:
    """The stats section given again at the end, as a second copy pasted in: the last one would win silently."""
    stats = json.loads(json.dumps(yaml.safe_load(PARAMS.read_text())["stats"]))  # no anchors: they are the first's
    return _dumped() + yaml.safe_dump({"stats": stats}, sort_keys=False)


def _not_utf8(tmp: Path) -> list[str]:
    (tmp / "params.yaml").write_bytes(PARAMS.read_bytes() + "# r\xe9sum\xe9\n".encode("latin-1"))
    return ["--params", str(tmp / "params.yaml")]


def _folder(tmp: Path) -> list[str]:
    (tmp / "params").mkdir()
    return ["--params", str(tmp / "params")]


def _fifo(tmp: Path) -> list[str]:
    os.mkfifo(tmp / "params.yaml")  # nobody writes to it: reading it would wait forever
    return ["--params", str(tmp / "params.yaml")]


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
    # a key or a section given twice: YAML keeps the last one silently
    Case("validate-duplicate-key", _written(_duplicate_key),
         "duplicate key train_transformer.default.loop.steps (first at line", entry="validate"),
    Case("validate-duplicate-section", _written(_duplicate_section), "duplicate key stats (first at line",
         entry="validate"),
    # the trainer takes the step modulo these: 0 passed validation, then divided by zero at step 1
    Case("validate-log-every-0", _edited(_set("train_transformer", "default", "loop.log_every", 0)),
         "train_transformer.default.loop.log_every must be between 1 and 10000000, got 0", entry="validate"),
    Case("validate-ckpt-every-0", _edited(_set("train_refiner", "tiny", "loop.ckpt_every", 0)),
         "train_refiner.tiny.loop.ckpt_every must be between 1 and 10000000, got 0", entry="validate"),
    Case("validate-eval-every-0", _edited(_set("pretrain_prior", "paper", "loop.eval_every", 0)),
         "pretrain_prior.paper.loop.eval_every must be between 1 and 10000000, got 0", entry="validate"),
    # no upper bound: a run of 1e30 steps, a batch of a billion images or a learning rate of 1e300 passed
    Case("validate-steps-1e30", _edited(_set("train_tokenizer", "default", "loop.steps", 10**30)),
         "train_tokenizer.default.loop.steps must be between 1 and 10000000, got 1000000000000000000000000000000",
         entry="validate"),
    Case("validate-batch-size-huge", _edited(_set("train_refiner", "small", "loop.batch_size", 10**9)),
         "train_refiner.small.loop.batch_size must be between 1 and 65536, got 1000000000", entry="validate"),
    Case("validate-lr-1e300", _edited(_set("finetune_decoder", "default", "loop.lr", 1e300)),
         "finetune_decoder.default.loop.lr must be in (0, 1], got 1e+300", entry="validate"),
    Case("validate-seed-negative", _edited(_set("train_transformer", "tiny", "loop.seed", -1)),
         "train_transformer.tiny.loop.seed must be between 0 and 4294967295, got -1", entry="validate"),
    Case("validate-max-failures-huge",
         _edited(_set("train_refiner", "paper", "tune", {"resources": {"cpu": 8, "gpu": 1}, "max_failures": 10**6})),
         "train_refiner.paper.tune.max_failures must be between 0 and 100, got 1000000", entry="validate"),
    # a config's own check named neither the stage nor the profile ("steps, batch_size and lr must be positive")
    Case("validate-steps-0-names-the-stage", _edited(_set("train_transformer", "small", "loop.steps", 0)),
         "train_transformer.small.loop.steps must be between 1 and 10000000, got 0", entry="validate"),
    Case("validate-weight-negative-names-the-stage",
         _edited(_set("finetune_decoder", "paper", "adversarial_weight", -0.5)),
         "finetune_decoder.paper.adversarial_weight must be between 0 and 100, got -0.5", entry="validate"),
    # NaN reached a message through the ablations' pre-training under a wrong name and a wrong hint
    Case("validate-pretrain-lr-nan",
         _edited(lambda raw: raw["ablations"]["default"]["families"]["positions"]["pretrain"]["loop"].update(
             lr=float("nan"))),
         "ablations.default.families.positions.pretrain.loop.lr: expected a finite number, got nan", entry="validate"),
    Case("validate-family-loop-nan-names-the-family",
         _edited(lambda raw: raw["ablations"]["default"]["families"]["refiner"]["loop"].update(lr=float("nan"))),
         "ablations.default.families.refiner.loop.lr: expected a finite number, got nan", entry="validate"),
    Case("validate-variant-key-inside-a-setting",
         _edited(_set("train_transformer", "default", "tune", {"variants": {"a": {"loop": {"steps": {"x": 1}}}}})),
         "train_transformer.default.tune.variants.a.loop.steps is a setting (100), not a section", entry="validate"),
    Case("validate-variant-old-dotted-key",
         _edited(_set("train_transformer", "default", "tune", {"variants": {"a": {"loop.steps": 1}}})),
         "train_transformer.default.tune.variants.a: 'loop.steps' is a dotted key, which params.yaml no longer reads; "
         "nest it: {loop: {steps: 1}}", entry="validate"),
    Case("validate-model-overrides-old-list",
         _edited(lambda raw: raw["model"]["default"].update(overrides=["refiner.kind=none"])),
         "model.default.overrides: a list of 'key=value' strings is the old form; write a nested mapping, "
         "e.g. overrides: {refiner: {kind: none}}", entry="validate"),
    # what the YAML reader itself choked on: a traceback, not a message
    Case("validate-5000-digit-integer", _written(_literal("train_transformer", "default", "loop.steps", "9" * 5000)),
         "train_transformer.default.loop.steps: the integer 9999999999999999...99999999 (5000 characters) is larger "
         "than any setting", entry="validate"),
    Case("validate-huge-hex-float", _written(_literal("train_tokenizer", "paper", "loop.lr", "0x" + "f" * 5000)),
         "train_tokenizer.paper.loop.lr: the integer 0xffffffffffffff...ffffffff (5002 characters) is larger",
         entry="validate"),
    Case("validate-impossible-date", _written(_literal("stats", "default", "seed", "2024-13-45")),
         "stats.default.seed: cannot read '2024-13-45' (month must be in 1..12)", entry="validate"),
    Case("validate-key-not-a-name", _written(_null_key),
         "train_transformer.default.loop: the key null reads as null, not as a name; quote it ('null')",
         entry="validate"),
    Case("validate-override-5000-digits",
         _edited(lambda raw: raw["model"]["default"].update(overrides={"transformer": {"depth": "9" * 5000}})),
         "model.default: transformer.depth: expected an integer, got '9999", entry="validate"),
    Case("validate-nested-too-deep", _written(lambda: _dumped() + "deep: " + "[" * 5000 + "]" * 5000 + "\n"),
         "nests its lists or mappings too deeply", entry="validate"),
    Case("validate-not-utf8", _not_utf8, "is not UTF-8 text", entry="validate"),
    Case("validate-folder", _folder, "is a folder; give the file inside it", entry="validate"),
    Case("validate-fifo", _fifo, "is not a regular file (a FIFO, socket or device)", entry="validate", timeout_s=60),
]
