import os
import pickle

import pytest

from ivt_core.boxes import Box
from ivt_core.cli import main
from ivt_core.data.importers import import_dataset
from ivt_core.errors import InvalidInputError, NotFoundError
from ivt_core.store.samples import get_samples
from tests import dataset_fixtures as fx


def _samples(workspace, name, split):
    return get_samples(workspace.connect(), name, split)


def test_refcocog_one_sample_per_sentence(workspace, tmp_path):
    root = fx.write_refcocog(tmp_path / "refer")
    summary = import_dataset(workspace, "refcocog", str(root / "refcocog"), split="val",
                             images=str(root / "images/mscoco/images/train2014"))
    samples = _samples(workspace, "refcocog", "val")
    assert [s.expression for s in samples] == ["the red thing", "thing on the left"]
    assert samples[0].bbox == Box(4, 5, 24, 15) and samples[0].width == 64
    assert summary.reasons["box outside the image"] == 1 and summary.imported == 2


def test_reimport_is_refused_unless_replace_and_never_duplicates(workspace, tmp_path):
    root = fx.write_refcocog(tmp_path / "refer")
    import_dataset(workspace, "refcocog", str(root), split="val")
    with pytest.raises(InvalidInputError, match="already has 2 samples in split 'val'.*--replace"):
        import_dataset(workspace, "refcocog", str(root), split="val")
    import_dataset(workspace, "refcocog", str(root), split="val", replace=True)
    assert len(_samples(workspace, "refcocog", "val")) == 2


def test_malicious_pickle_is_refused_and_runs_nothing(workspace, tmp_path):
    root = fx.write_refcocog(tmp_path / "refer")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (root / "refcocog" / "refs(umd).p").write_bytes(pickle.dumps([Evil()], protocol=2))
    with pytest.raises(InvalidInputError, match="refused"):
        import_dataset(workspace, "refcocog", str(root), split="val")
    assert not marker.exists()
    assert workspace.connect().execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 0


def test_refcocog_parquet_explodes_answers_and_skips_broken_images(workspace, tmp_path):
    root = fx.write_refcocog_parquet(tmp_path / "pq")
    summary = import_dataset(workspace, "refcocog-parquet", str(root), split="val")
    assert sorted(s.expression for s in _samples(workspace, "refcocog-parquet", "val")) == [
        "left one", "red thing", "the red one"]
    assert summary.reasons["missing or unreadable image"] == 1
    assert any("row 2" in e for e in summary.examples["missing or unreadable image"])


@pytest.mark.parametrize("archive", [True, False])
def test_ref_l4_from_archive_or_folder(workspace, tmp_path, archive):
    root = fx.write_ref_l4(tmp_path / "l4", archive=archive)
    summary = import_dataset(workspace, "ref-l4", str(root), split="val")
    (sample,) = _samples(workspace, "ref-l4", "val")
    assert sample.bbox == Box(2, 2, 12, 12) and sample.source == "ref-l4"
    assert summary.reasons["empty box (zero width or height)"] == 1
    assert summary.reasons["missing or unreadable image"] == 1


def test_ref_adv_s_absolute_xyxy(workspace, tmp_path):
    root = fx.write_ref_adv_s(tmp_path / "adv")
    summary = import_dataset(workspace, "ref-adv-s", str(root))
    (sample,) = _samples(workspace, "ref-adv-s", "test")
    assert sample.bbox == Box(3, 4, 30, 40) and summary.reasons["box outside the image"] == 1


def test_jsonl_formats_and_reasons(workspace, tmp_path):
    path = fx.write_jsonl(tmp_path / "j")
    summary = import_dataset(workspace, "jsonl", str(path))
    boxes = {s.expression: s.bbox for s in _samples(workspace, "jsonl", "test")}
    assert boxes == {"the thing": Box(10, 10, 50, 40), "coco style": Box(10, 10, 30, 30),
                     "relative": Box(10, 10, 50, 40)}
    assert summary.skipped == 3 and "line 4" in str(summary.examples)


def test_missing_files_and_columns(workspace, tmp_path):
    with pytest.raises(NotFoundError):
        import_dataset(workspace, "jsonl", str(tmp_path / "nope.jsonl"))
    root = fx.write_ref_adv_s(tmp_path / "adv")
    import pandas as pd

    broken = pd.DataFrame({"image": [b""], "solution": [[1, 2, 3, 4]]})
    broken.to_parquet(root / "data" / "train-00000-of-00001.parquet")
    with pytest.raises(InvalidInputError, match="normal_caption"):
        import_dataset(workspace, "ref-adv-s", str(root))
    (tmp_path / "bad.parquet").write_bytes(b"garbage")
    with pytest.raises(InvalidInputError, match="bad.parquet"):
        import_dataset(workspace, "ref-adv-s", str(tmp_path / "bad.parquet"))


def test_mix_is_balanced_seeded_and_disjoint(workspace, tmp_path):
    from ivt_core.data.shapes_split import write_shapes_split

    write_shapes_split(workspace, "test", 12, name="a")
    write_shapes_split(workspace, "test", 12, seed=1, name="b")
    summary = import_dataset(workspace, "mix", "a,b", sizes=[6, 4, 2], seed=3)
    splits = {split: _samples(workspace, "mix", split) for split in ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [6, 4, 2] and summary.imported == 12
    assert sum(s.source == "a" for s in splits["train"]) == 3
    origins = [s.meta["origin"] for v in splits.values() for s in v]
    assert len(set(origins)) == 12
    with pytest.raises(InvalidInputError, match="too small"):
        import_dataset(workspace, "mix", "a,b", sizes=[30, 0, 0], name="big")


def test_cli_import_prints_summary(workspace, tmp_path, capsys):
    path = fx.write_jsonl(tmp_path / "j")
    assert main(["data", "import", "jsonl", str(path), "--workspace", str(workspace.root)]) == 0
    out = capsys.readouterr().out
    assert "imported 3, skipped 3" in out and "bbox_format missing" in out
    assert main(["data", "import", "jsonl", str(tmp_path / "x.jsonl"), "--workspace", str(workspace.root)]) == 2
