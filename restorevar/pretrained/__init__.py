"""Weights pretrained for a preset and shipped with the package, as the paper starts from VAR's.

``<preset>/card.json`` lists each file with its SHA-256; ``MODEL_CARD.md`` beside it says how it was made
(sources and their hashes, params, steps, wall time, validation metrics, commit). `make pretrain`
regenerates them. A file is handed out only after its digest matches the card, so a truncated or
swapped file is a one-line error, never a model that silently starts elsewhere.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from restorevar.errors import UserError

ROOT = Path(__file__).resolve().parent
PARTS = ("tokenizer", "prior", "restoration")
REBUILD = "run `make pretrain` to regenerate it (or restore it with `git checkout`)"


def card(preset: str) -> dict[str, Any]:
    path = ROOT / preset / "card.json"
    if not path.is_file():
        have = sorted(p.name for p in ROOT.iterdir() if (p / "card.json").is_file())
        raise UserError(f"no pretrained weights are shipped for preset {preset!r} (shipped: {', '.join(have) or 'none'}); "
                        f"`make pretrain` makes them, or set init_from to a checkpoint path or to \"\"")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is unreadable ({e}); {REBUILD}") from None


def pretrained_path(preset: str, part: str) -> Path:
    """The shipped ``part`` (tokenizer, prior or restoration) for ``preset``, after checking its SHA-256 against the
    card."""
    from restorevar.data.fetch import sha256_of

    if part not in PARTS:
        raise UserError(f"unknown pretrained part {part!r}; choose {' or '.join(PARTS)}")
    entry = card(preset).get("files", {}).get(part)
    if not entry:
        raise UserError(f"the {preset} model card lists no {part} weights; {REBUILD}")
    path = ROOT / preset / entry["file"]
    if not path.is_file():
        raise UserError(f"pretrained {part} weights {path} are missing; {REBUILD}")
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise UserError(f"pretrained {part} weights {path} do not match their card (sha256 {digest[:12]}…, "
                        f"card {entry['sha256'][:12]}…): corrupt or replaced; {REBUILD}")
    return path
