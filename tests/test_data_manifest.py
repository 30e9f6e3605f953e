"""Manifests: the published format round-trip, `data check` finding each kind of problem, the Dataset."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from restorevar.cli import main
from restorevar.data.dataset import DegradationBalancedSampler, PairedDataset, PairedTransform, collate_skip_none
from restorevar.data.manifest import Entry, check_manifest, degradation_class, read_manifest, write_manifest
from restorevar.errors import UserError
from restorevar.fileio import ImageReadError


def _img(path, w=40, h=30, value=None, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8) if value is None \
        else np.full((h, w, 3), value, np.uint8)
    Image.fromarray(arr).save(path)
    return path


def test_round_trip_writes_the_official_labels_and_keeps_unknown_keys(tmp_path):
    read = [
        {"image_path": "/abs/rain/1.png", "target_path": "/abs/gt/1.png", "degradation": 2, "dataset": "Rain13K"},
        {"image_path": "in/2.png", "target_path": "gt/2.png", "degradation": "Low-light", "dataset": "LOLv1",
         "their_field": [1, 2], "split": "test"},
    ]
    (tmp_path / "m.json").write_text(json.dumps(read))
    entries = read_manifest(tmp_path / "m.json")
    assert [e.degradation for e in entries] == [2, 4]
    write_manifest(tmp_path / "out.json", entries)
    written = json.loads((tmp_path / "out.json").read_text())
    # the names the official loader accepts (its DEGRADATIONS), nothing else changed
    assert [w["degradation"] for w in written] == ["Rain", "Low-light"]
    assert written[1] == read[1] and {**written[0], "degradation": 2} == read[0]
    assert read_manifest(tmp_path / "out.json") == entries


def test_every_class_is_written_with_a_label_the_official_loader_knows():
    from restorevar.data.manifest import CLASS_NAMES, OFFICIAL_LABELS

    official = {"Haze", "Rain", "Snow", "Low-light", "Motion blur", "Mixed", "toled", "poled"}
    assert set(OFFICIAL_LABELS.values()) == official and set(OFFICIAL_LABELS) == set(CLASS_NAMES)
    for k in CLASS_NAMES:
        assert degradation_class(Entry("a", "b", k, "x").to_json()["degradation"]) == k


def test_ids_come_from_the_dataset_relative_path_where_stems_repeat():

    gopro = [Entry(f"data/Motion_blur/GoPro/Test/{seq}/blur/000001.png", "t", 5, "GoPro")
             for seq in ("GOPR0384_11_00", "GOPR0385_11_01")]
    assert [e.id for e in gopro] == ["Test-GOPR0384_11_00-blur-000001", "Test-GOPR0385_11_01-blur-000001"]
    rain = [Entry(f"test_data/Rain13K/{t}/input/1.png", "t", 2, "Rain13K") for t in ("Rain100H", "Test100")]
    assert rain[0].id != rain[1].id
    assert Entry("in/7.png", "t", 1, "toy").id == "in-7"  # no dataset folder: the whole relative path
    assert Entry("/abs/x/Rain13K/a.png", "t", 2, "Rain13K").id == "a"
    assert Entry("in/7.png", "t", 1, "toy", {"id": 12}).id == "12"  # a given id wins


def test_degradation_names_are_accepted_as_labels(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps([
        {"image_path": "a.png", "target_path": "b.png", "degradation": "Low-light", "dataset": "x"},
        {"image_path": "c.png", "target_path": "d.png", "degradation": "motion blur", "dataset": "x"}]))
    assert [e.degradation for e in read_manifest(tmp_path / "m.json")] == [4, 5]


def _problem_tree(tmp_path):
    for i in range(4):
        _img(tmp_path / "in" / f"{i}.png", seed=i)
        _img(tmp_path / "gt" / f"{i}.png", seed=10 + i)
    _img(tmp_path / "gt" / "big.png", w=64, h=64)
    (tmp_path / "in" / "trunc.png").write_bytes((tmp_path / "in" / "0.png").read_bytes()[:60])
    rows = [
        ("in/0.png", "gt/0.png", 1),        # 0 fine
        ("in/1.png", "gt/big.png", 2),      # 1 size mismatch
        ("in/missing.png", "gt/2.png", 3),  # 2 missing file
        ("in/trunc.png", "gt/3.png", 4),    # 3 truncated image
        ("in/0.png", "gt/0.png", 1),        # 4 duplicate of 0
        ("in/3.png", "gt/3.png", 42),       # 5 unknown label
    ]
    m = [{"image_path": a, "target_path": b, "degradation": d, "dataset": "toy"} for a, b, d in rows]
    (tmp_path / "train.json").write_text(json.dumps(m))
    (tmp_path / "test.json").write_text(json.dumps([m[5] | {"degradation": 1}]))


def test_check_finds_every_kind_of_problem(tmp_path):
    _problem_tree(tmp_path)
    _, problems = check_manifest(tmp_path / "train.json", other=tmp_path / "test.json")
    by_index = {}
    for p in problems:
        by_index.setdefault(p.index, []).append(p.message)
    assert 0 not in by_index
    assert any("differs from target size" in m for m in by_index[1])
    assert any("file not found" in m for m in by_index[2])
    assert any("cannot decode image" in m for m in by_index[3])
    assert any("duplicate of entry 0" in m for m in by_index[4])
    assert any("unknown degradation label 42" in m for m in by_index[5])
    assert any("train and test overlap" in m for m in by_index[5])


def test_check_cli_prints_table_then_one_line_per_problem_and_fails(tmp_path, capsys):
    _problem_tree(tmp_path)
    assert main(["data", "check", str(tmp_path / "train.json"), "--against", str(tmp_path / "test.json")]) == 2
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert out[0].split() == ["dataset", "degradation", "pairs"]
    problems = [line for line in out if line.startswith("problem: ")]
    assert len(problems) == 8 and all("[" in p and ".png" in p for p in problems)
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("restorevar: error: 8 problem(s): first ")
    assert "differs from target size" in err[0]  # the first problem, entry 1


def _write(path, rows):
    path.write_text(json.dumps(rows))
    return path


def _good(tmp_path, name="0", seed=0):
    _img(tmp_path / "in" / f"{name}.png", seed=seed)
    _img(tmp_path / "gt" / f"{name}.png", seed=seed + 50)
    return {"image_path": f"in/{name}.png", "target_path": f"gt/{name}.png", "degradation": 1, "dataset": "toy"}


def _messages(problems):
    return {p.index: [q.message for q in problems if q.index == p.index] for p in problems}


def test_wrongly_typed_fields_are_findings_not_crashes(tmp_path):
    ok = _good(tmp_path)
    rows = [ok,
            ok | {"target_path": 5},
            ok | {"image_path": None},
            ok | {"dataset": None},
            ok | {"degradation": [1]},
            ok | {"degradation": True},
            ok | {"id": {"a": 1}},
            ["in/0.png", "gt/0.png"],
            {"image_path": "in/0.png"}]
    m = _write(tmp_path / "m.json", rows)
    entries, problems = check_manifest(m)
    by = _messages(problems)
    assert 0 not in by and len(entries) == 1
    assert any("target_path must be a string" in x and "int 5" in x for x in by[1])
    assert any("image_path must be a non-empty string, got null" in x for x in by[2])
    assert any("dataset must be a non-empty string" in x and "null" in x for x in by[3])
    assert any("degradation must be an integer class" in x for x in by[4])
    assert any("degradation must be an integer class" in x and "bool" in x for x in by[5])
    assert any("id must be a string or an integer" in x for x in by[6])
    assert any("is a list, not an object" in x for x in by[7])
    assert any("lacks degradation, dataset" in x for x in by[8])
    # readers that train or evaluate refuse the first bad entry in one line, naming it
    with pytest.raises(UserError, match=r"entry 1: target_path must be a string.*restorevar data check"):
        read_manifest(m)


def test_paths_must_stay_inside_the_manifests_folder(tmp_path):
    root = tmp_path / "root"
    outside = _img(tmp_path / "elsewhere" / "x.png")
    ok = _good(root)
    m = _write(root / "m.json", [ok | {"image_path": str(outside)}, ok | {"target_path": "../elsewhere/x.png"},
                                 ok | {"image_path": "in/../in/0.png", "target_path": "gt/0.png", "id": "fine"}])
    _, problems = check_manifest(m)
    by = _messages(problems)
    assert any("is an absolute path" in x for x in by[0])
    assert any("leaves the manifest's folder through '..'" in x for x in by[1])
    assert not any("absolute" in x or "leaves" in x for x in by.get(2, []))  # '..' that stays inside is fine
    # the reference code's manifests use absolute paths: accepted when asked
    _, problems = check_manifest(m, allow_outside_root=True)
    assert not any("absolute" in p.message or "leaves" in p.message for p in problems)


def test_duplicate_ids_are_findings(tmp_path):
    a, b = _good(tmp_path, "a", 1), _good(tmp_path, "b", 2)
    m = _write(tmp_path / "m.json", [a | {"id": "x"}, b | {"id": "y"}, b | {"id": "x", "image_path": "in/a.png",
                                                                             "target_path": "gt/b.png"}])
    _, problems = check_manifest(m)
    assert [(p.index, p.message) for p in problems] == [
        (2, "id 'x' is also the id of entry 0 of dataset toy; ids must be unique")]
    # without ids, an image is named by its path below the dataset: one file name in two folders is fine, but
    # two files whose paths differ only in the extension collide (within a dataset, not across two)
    c = _good(tmp_path / "sub", "a", 3) | {"image_path": "sub/in/a.png", "target_path": "sub/gt/a.png"}
    assert check_manifest(_write(tmp_path / "m.json", [a, c]))[1] == []
    shutil.copy(tmp_path / "in" / "a.png", tmp_path / "in" / "a.jpg")
    d = a | {"image_path": "in/a.jpg", "target_path": "gt/b.png"}
    _, problems = check_manifest(_write(tmp_path / "m.json", [a, d]))
    assert [(p.index, "its id is its path 'in-a'" in p.message) for p in problems] == [(1, True)]
    _, problems = check_manifest(_write(tmp_path / "m.json", [a, d | {"dataset": "other"}]))
    assert problems == []


def test_a_test_image_copied_into_train_is_found_by_content(tmp_path):
    test_row = _good(tmp_path / "test", "t", 7)
    _write(tmp_path / "test" / "test.json", [test_row])
    train_row = _good(tmp_path / "train", "a", 1)
    copied = tmp_path / "train" / "in" / "copy_of_t.png"
    shutil.copyfile(tmp_path / "test" / "in" / "t.png", copied)
    m = _write(tmp_path / "train" / "train.json",
               [train_row, train_row | {"image_path": "in/copy_of_t.png", "target_path": None}])
    _, problems = check_manifest(m, other=tmp_path / "test" / "test.json")
    assert [(p.index, p.path) for p in problems] == [(1, str(copied))]
    assert "same content as" in problems[0].message and "t.png" in problems[0].message
    _, problems = check_manifest(m)  # without --against there is nothing to compare with
    assert problems == []


def test_an_empty_manifest_is_a_finding(tmp_path, capsys):
    m = _write(tmp_path / "m.json", [])
    entries, problems = check_manifest(m)
    assert entries == [] and [p.message for p in problems] == ["holds no entries; a manifest lists at least one image"]
    assert main(["data", "check", str(m)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 problem(s): first" in err[0] and "holds no entries" in err[0]


def test_a_clean_manifest_passes_the_cli(tmp_path, capsys):
    m = _write(tmp_path / "m.json", [_good(tmp_path, "a", 1) | {"id": 1}, _good(tmp_path, "b", 2) | {"id": "2"}])
    assert main(["data", "check", str(m)]) == 0
    assert capsys.readouterr().err.strip() == "ok: 2 entries"


def test_check_of_a_missing_or_broken_manifest_is_one_line(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nope.json")]) == 2
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["data", "check", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "manifest not found" in err[0] and "not valid JSON" in err[1]


# -- Dataset ------------------------------------------------------------------------------------
def _pairs(tmp_path, n=6, w=48, h=40):
    entries = []
    for i in range(n):
        _img(tmp_path / "in" / f"{i}.png", w, h, seed=i)
        _img(tmp_path / "gt" / f"{i}.png", w, h, seed=100 + i)
        entries.append(Entry(f"in/{i}.png", f"gt/{i}.png", 1 + i % 3, "toy"))
    write_manifest(tmp_path / "m.json", entries)
    return tmp_path / "m.json"


def test_train_transform_crops_pairs_identically_and_reproducibly(tmp_path):
    m = _pairs(tmp_path)
    t = PairedTransform(crop=16, resize_shorter=None, hflip=True)
    ds = PairedDataset(m, t, seed=3)
    a, b = ds[2], ds[2]
    assert a["degraded"].shape == (3, 16, 16) and torch.equal(a["degraded"], b["degraded"])
    assert a["degraded"].min() >= -1 and a["degraded"].max() <= 1
    # the same window in both images: compare against a direct crop of the full pair
    full_deg = np.asarray(Image.open(tmp_path / "in" / "2.png"), np.float32) / 127.5 - 1
    full_gt = np.asarray(Image.open(tmp_path / "gt" / "2.png"), np.float32) / 127.5 - 1
    deg = a["degraded"].permute(1, 2, 0).numpy()
    found = [(y, x, f) for y in range(40 - 15) for x in range(48 - 15) for f in (False, True)
             if np.allclose((full_deg[y:y + 16, x:x + 16][:, ::-1] if f else full_deg[y:y + 16, x:x + 16]), deg)]
    assert len(found) == 1
    y, x, f = found[0]
    gt = full_gt[y:y + 16, x:x + 16][:, ::-1] if f else full_gt[y:y + 16, x:x + 16]
    assert np.allclose(a["clean"].permute(1, 2, 0).numpy(), gt)


def test_resize_shorter_and_test_protocols(tmp_path):
    m = _pairs(tmp_path)
    ds = PairedDataset(m, PairedTransform(crop=24, resize_shorter=30))
    assert ds[0]["clean"].shape == (3, 24, 24)
    rs = PairedDataset(m, PairedTransform(crop=32, mode="test", test_protocol="resize"))[0]
    cc = PairedDataset(m, PairedTransform(crop=32, mode="test", test_protocol="center_crop"))[0]
    assert rs["degraded"].shape == cc["degraded"].shape == (3, 32, 32)
    full = np.asarray(Image.open(tmp_path / "in" / "0.png"), np.float32) / 127.5 - 1
    assert np.allclose(cc["degraded"].permute(1, 2, 0).numpy(), full[4:36, 8:40])


def test_corrupt_image_names_the_file_or_is_skipped_and_counted(tmp_path):
    m = _pairs(tmp_path)
    bad = tmp_path / "in" / "3.png"
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(ImageReadError, match="3.png"):
        PairedDataset(m, PairedTransform(crop=16, resize_shorter=None))[3]
    ds = PairedDataset(m, PairedTransform(crop=16, resize_shorter=None), skip_corrupt=True)
    batch = collate_skip_none([ds[i] for i in range(6)])
    assert batch["degraded"].shape[0] == 5 and ds.skipped == ["in/3.png"]


def test_unknown_labels_are_refused_by_the_dataset(tmp_path):
    m = _pairs(tmp_path)
    data = json.loads(m.read_text())
    data[0]["degradation"] = 99
    m.write_text(json.dumps(data))
    with pytest.raises(UserError, match="unknown degradation 99"):
        PairedDataset(m, PairedTransform(crop=16))


def test_balanced_sampler_balances_degradations_not_entries():
    labels = [1] * 90 + [2] * 9 + [3] * 1
    s = DegradationBalancedSampler(labels, num_samples=6000, seed=0)
    drawn = [labels[i] for i in s]
    counts = np.bincount(drawn, minlength=4)[1:]
    assert np.all(np.abs(counts / 6000 - 1 / 3) < 0.03)
    assert list(s) == list(DegradationBalancedSampler(labels, 6000, seed=0))  # seeded
    s.set_epoch(1)
    assert list(s) != list(DegradationBalancedSampler(labels, 6000, seed=0))


def test_dataset_missing_manifest_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="manifest not found"):
        PairedDataset(tmp_path / "x.json", PairedTransform())
    shutil.rmtree(tmp_path)
