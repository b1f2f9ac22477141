"""Tiny files in the real benchmark formats (written by tests; all values synthetic)."""

import io
import json
import pickle
import tarfile

import pandas as pd
from PIL import Image


def png_bytes(size=(64, 48), colour=(200, 30, 30)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_refcocog(root):
    folder = root / "refcocog"
    images = root / "images" / "mscoco" / "images" / "train2014"
    folder.mkdir(parents=True)
    images.mkdir(parents=True)
    (images / "COCO_train2014_000000000001.jpg").write_bytes(png_bytes((64, 48)))
    refs = [
        {"ref_id": 1, "ann_id": 101, "image_id": 1, "category_id": 1, "split": "val", "sent_ids": [11, 12],
         "file_name": "COCO_train2014_000000000001_101.jpg",
         "sentences": [{"sent_id": 11, "sent": "the red thing", "raw": "The red thing.", "tokens": []},
                       {"sent_id": 12, "sent": "thing on the left", "raw": "", "tokens": []}]},
        {"ref_id": 2, "ann_id": 102, "image_id": 1, "category_id": 1, "split": "test", "sent_ids": [13],
         "file_name": "x", "sentences": [{"sent_id": 13, "sent": "test one", "raw": "", "tokens": []}]},
        {"ref_id": 3, "ann_id": 103, "image_id": 1, "category_id": 1, "split": "val", "sent_ids": [14],
         "file_name": "x", "sentences": [{"sent_id": 14, "sent": "outside", "raw": "", "tokens": []}]},
    ]
    with open(folder / "refs(umd).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    instances = {
        "images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "height": 48, "width": 64}],
        "annotations": [{"id": 101, "image_id": 1, "category_id": 1, "bbox": [4, 5, 20, 10]},
                        {"id": 102, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
                        {"id": 103, "image_id": 1, "category_id": 1, "bbox": [50, 40, 30, 30]}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (folder / "instances.json").write_text(json.dumps(instances))
    return root


def write_refcocog_parquet(root):
    (root / "data").mkdir(parents=True)
    frame = pd.DataFrame({
        "question_id": ["298801", "298802", "298803"],
        "image": [{"bytes": png_bytes(), "path": "a.png"}, {"bytes": png_bytes(), "path": "b.png"},
                  {"bytes": b"broken", "path": "c.png"}],
        "question": ["Please locate ..."] * 3,
        "answer": [["the red one", "red thing"], ["left one"], ["x"]],
        "bbox": [[1.0, 2.0, 10.0, 10.0], [0.0, 0.0, 64.0, 48.0], [1.0, 1.0, 2.0, 2.0]],
        "file_name": ["a.jpg", "b.jpg", "c.jpg"],
    })
    frame.to_parquet(root / "data" / "val-00000-of-00001.parquet")
    return root


def write_ref_l4(root, archive=True):
    root.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({
        "id": [0, 1, 2], "caption": ["a long caption about the red object", "second", "missing image"],
        "bbox": [[2.0, 2.0, 10.0, 10.0], [0.0, 0.0, 0.0, 5.0], [1.0, 1.0, 3.0, 3.0]],
        "bbox_area": [100.0, 0.0, 9.0], "bbox_id": ["o365_1", "o365_2", "o365_3"],
        "ori_category_id": ["o365_64"] * 3, "image_id": ["o365_1"] * 3, "height": [48] * 3, "width": [64] * 3,
        "file_name": ["objects365_v2_00000001.jpg", "objects365_v2_00000001.jpg", "nope.jpg"],
        "is_rewrite": [False] * 3, "split": ["val"] * 3,
    })
    frame.to_parquet(root / "ref-l4-val.parquet")
    data = png_bytes()
    if archive:
        with tarfile.open(root / "images.tar.gz", "w:gz") as tar:
            info = tarfile.TarInfo("objects365_v2_00000001.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    else:
        (root / "images").mkdir()
        (root / "images" / "objects365_v2_00000001.jpg").write_bytes(data)
    return root


def write_ref_adv_s(root):
    (root / "data").mkdir(parents=True)
    frame = pd.DataFrame({
        "image": [{"bytes": png_bytes(), "path": None}, {"bytes": png_bytes(), "path": None}],
        "file_name": ["1.jpg", "2.jpg"], "normal_caption": ["the cup not on the left", "the other cup"],
        "solution": [[3.0, 4.0, 30.0, 40.0], [60.0, 10.0, 70.0, 20.0]], "width": [64, 64], "height": [48, 48],
        "image_source": ["coco", "coco"], "human_authored": [True, False], "use_negation": [True, False],
        "distractors": ["2", "3"],
    })
    frame.to_parquet(root / "data" / "train-00000-of-00001.parquet")
    return root


def write_jsonl(root):
    root.mkdir(parents=True, exist_ok=True)
    (root / "img.png").write_bytes(png_bytes((100, 50)))
    lines = [
        {"id": "a", "image": "img.png", "expression": "the thing", "bbox": [10, 10, 50, 40], "bbox_format": "xyxy"},
        {"id": "b", "image": "img.png", "expression": "coco style", "bbox": [10, 10, 20, 20], "bbox_format": "xywh"},
        {"id": "c", "image": "img.png", "expression": "relative", "bbox": [100, 200, 500, 800],
         "bbox_format": "norm1000"},
        {"id": "d", "image": "img.png", "expression": "no format", "bbox": [1, 2, 3, 4]},
        {"id": "e", "image": "missing.png", "expression": "gone", "bbox": [1, 2, 3, 4], "bbox_format": "xyxy"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot json at all\n"
    (root / "data.jsonl").write_text(text)
    return root / "data.jsonl"
