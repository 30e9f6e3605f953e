"""`source: manifests`: the official code's own splits, read from its JSON format, paths under a given root."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.data import _from_manifests
from pipelines.params_schema import DataParams
from restorevar.data.manifest import check_manifest, read_manifest


def _png(path, seed, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


@pytest.mark.parametrize("relative", [False, True])
def test_official_manifests_are_merged_with_their_labels_and_path_ids(tmp_path, relative):
    """Manifests named absolutely, or relative to ``root`` as params.yaml's example writes them."""
    repo = tmp_path / "official"
    train, test = [], []
    for i, seq in enumerate(("GOPR0372_07_00", "GOPR0374_11_00")):  # the same frame name in two sequences
        for kind in ("blur", "sharp"):
            _png(repo / f"data/Motion_blur/GoPro/Train/{seq}/{kind}/000047.png", 10 * i + (kind == "sharp"))
        train.append({"image_path": f"data/Motion_blur/GoPro/Train/{seq}/blur/000047.png",
                      "target_path": f"data/Motion_blur/GoPro/Train/{seq}/sharp/000047.png",
                      "degradation": "Motion blur", "dataset": "GoPro"})
    for i, name in enumerate(("Rain100H", "Test100")):  # and in two Rain13K test sets
        _png(repo / f"test_data/Rain13K/{name}/input/1.png", 40 + i)
        _png(repo / f"test_data/Rain13K/{name}/target/1.png", 50 + i)
        test.append({"image_path": f"test_data/Rain13K/{name}/input/1.png",
                     "target_path": f"test_data/Rain13K/{name}/target/1.png", "degradation": "Rain",
                     "dataset": "Rain13K"})
    (repo / "trainset.json").write_text(json.dumps(train))
    (repo / "test_jsons").mkdir()
    (repo / "test_jsons" / "Rain13K.json").write_text(json.dumps(test))
    where = Path() if relative else repo
    d = DataParams(source="manifests", root=str(repo), train_manifests=[str(where / "trainset.json")],
                   test_manifests=[str(where / "test_jsons" / "Rain13K.json")])
    d.check("data.paper")
    out = tmp_path / "prepared"
    _from_manifests(d, out)
    tr, te = read_manifest(out / "train.json"), read_manifest(out / "test.json")
    assert [e.degradation for e in tr] == [5, 5] and [e.degradation for e in te] == [2, 2]
    assert [e.id for e in tr] == ["Train-GOPR0372_07_00-blur-000047", "Train-GOPR0374_11_00-blur-000047"]
    assert [e.id for e in te] == ["Rain100H-input-1", "Test100-input-1"]
    assert all((repo / "data").resolve() in Path(e.image_path).parents for e in tr)
    entries, problems = check_manifest(out / "train.json", other=out / "test.json", allow_outside_root=True)
    assert problems == [] and len(entries) == 2
    assert json.loads((out / "test.json").read_text())[0]["degradation"] == "Rain"  # still loadable by theirs


def test_source_manifests_needs_both_lists():
    from restorevar.errors import UserError

    with pytest.raises(UserError, match="source 'manifests' needs non-empty lists 'train_manifests' and 'test_manifests'"):
        DataParams(source="manifests", train_manifests=["a.json"]).check("data.paper")
