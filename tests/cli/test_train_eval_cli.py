import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from efficientdet.cli import main
from efficientdet.cli.train import apply_sets
from efficientdet.config import config_from_dict
from efficientdet.shapes import make_shapes_dataset
from efficientdet.train import TrainConfig
from efficientdet.weights import read_metadata


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("d"), num_train=8, num_val=4, image_size=128, seed=2)


def test_train_then_eval_with_weights_and_with_predictions(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--image-size", "128", "--batch-size", "4",
                 "--epochs", "1", "--workers", "0", "--set", "eval_every=1"]) == 0
    assert (out / "weights" / "best.safetensors").is_file() and (out / "metrics.jsonl").is_file()
    metrics_file, preds = tmp_path / "m.json", tmp_path / "p.json"
    assert main(["eval", "--data", str(data), "--model", "efficientdet-lite0", "--weights",
                 str(out / "weights" / "best.safetensors"), "--image-size", "128", "--workers", "0",
                 "--json", str(metrics_file), "--save-predictions", str(preds)]) == 0
    metrics = json.loads(metrics_file.read_text())
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(metrics)
    again = tmp_path / "m2.json"
    assert main(["eval", "--data", str(data), "--predictions", str(preds), "--json", str(again)]) == 0
    assert json.loads(again.read_text()) == metrics  # scoring the saved results gives the same numbers


def test_official_coco_label_space_is_mapped(data, tmp_path, capsys):
    """A 90-class model on a dataset whose ids lie in 1..90: output c is scored as category c + 1."""
    from efficientdet import create_model
    from efficientdet.weights import save_safetensors

    weights = save_safetensors(create_model("efficientdet-lite0", image_size=128), tmp_path / "coco.safetensors")
    assert main(["eval", "--data", str(data), "--model", "efficientdet-lite0", "--weights", str(weights),
                 "--image-size", "128", "--workers", "0"]) == 0


def test_eval_nms_scope_selects_official_evaluation_or_inference_postprocessing(data, tmp_path, capsys):
    """Default per-class (official COCO evaluation) and --nms-scope global (inference default) give
    the results that evaluate() gives with those two postprocess configs."""
    import torch

    from efficientdet import Detector, create_model
    from efficientdet.config import evaluation_postprocess
    from efficientdet.data import DetectionDataset, EvalTransform, build_loader, load_dataset_yaml, load_split
    from efficientdet.evaluate import evaluate
    from efficientdet.weights import save_safetensors

    torch.manual_seed(0)
    model = create_model("efficientdet-lite0", num_classes=4, image_size=128).eval()
    with torch.no_grad():  # spread the scores: at init every class sits at the prior, all near-ties
        for p in model.class_net.parameters():
            p.add_(torch.randn_like(p), alpha=0.5)
    weights = save_safetensors(model, tmp_path / "w.safetensors")
    split = load_split(load_dataset_yaml(data), "val")
    cfg = model.config
    loader = build_loader(DetectionDataset(split.samples, EvalTransform(cfg.image_size, cfg.preprocess)), 8)
    for scope, post in (("per-class", evaluation_postprocess(cfg.postprocess)), ("global", cfg.postprocess)):
        saved = tmp_path / f"{scope}.json"
        assert main(["eval", "--data", str(data), "--model", "efficientdet-lite0", "--weights", str(weights),
                     "--image-size", "128", "--workers", "0", "--nms-scope", scope, "--save-predictions", str(saved)]) == 0
        _, expected = evaluate(Detector(model, post, label_ids=split.label_ids), loader, split)
        got = json.loads(saved.read_text())
        assert len(got) == len(expected) > 0
        assert [(r["image_id"], r["category_id"]) for r in got] == [(r["image_id"], r["category_id"]) for r in expected]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(got, expected)) < 1e-5
    assert json.loads((tmp_path / "per-class.json").read_text()) != json.loads((tmp_path / "global.json").read_text())


def test_evaluation_does_not_import_the_trainer():
    """Arrows run one way: evaluate and the eval command are below train, which calls them."""
    import ast

    import efficientdet

    root = Path(efficientdet.__file__).parent
    for path in (root / "evaluate.py", root / "cli" / "eval.py"):
        package = "efficientdet" if path.parent == root else "efficientdet.cli"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                module = f"{base}.{node.module or ''}".strip(".")
                names = [module] + [f"{module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n == "efficientdet.train" or n.startswith("efficientdet.train.") for n in names), \
                (path, names)


def test_train_and_eval_at_a_non_square_size(data, tmp_path):
    """``--image-size HxW`` is the network input end to end: anchors, targets, the training
    transform, validation during training, the stored config and eval all run at 128x192."""
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--image-size", "128x192", "--batch-size", "4",
                 "--epochs", "1", "--workers", "0", "--set", "eval_every=1"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["image_size"] == config["model"]["image_size"] == [128, 192]
    weights = out / "weights" / "best.safetensors"
    stored = config_from_dict(json.loads(read_metadata(weights)["config"]))
    assert stored.image_size == (128, 192) and stored == config_from_dict(config["model"])
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 2 and 0 <= record["AP"] <= 1  # 8 images in batches of 4, then validation
    metrics_file = tmp_path / "m.json"
    assert main(["eval", "--data", str(data), "--model", "efficientdet-lite0", "--weights", str(weights),
                 "--image-size", "128x192", "--workers", "0", "--json", str(metrics_file)]) == 0
    assert 0 <= json.loads(metrics_file.read_text())["AP"] <= 1


def test_train_config_image_size_is_height_width():
    assert TrainConfig(image_size=128).image_size == (128, 128)
    assert TrainConfig(image_size=(128, 192)).image_size == (128, 192)
    assert apply_sets(TrainConfig(), ["image_size=128,192"]).image_size == (128, 192)
    assert apply_sets(TrainConfig(image_size=128), ["image_size=none"]).image_size is None
    with pytest.raises(ValueError, match=r"TrainConfig.image_size must be >= 65 for efficientdet-lite0 \(or None: "
                                         r"the model's own\), got \(64, 192\)"):
        TrainConfig(image_size=(64, 192))
    with pytest.raises(ValueError, match="TrainConfig.image_size must be an int or"):
        TrainConfig(image_size="128x192")


def test_set_values_are_typed_and_checked():
    cfg = apply_sets(TrainConfig(), ["lr=0.04", "amp=true", "scale_range=0.5,1.5", "loss.gamma=2", "weights=none"])
    assert cfg.lr == 0.04 and cfg.amp is True and cfg.scale_range == (0.5, 1.5) and cfg.loss.gamma == 2.0
    assert cfg.weights is None
    with pytest.raises(ValueError, match="--set lrr: unknown field; valid: .*lr"):
        apply_sets(TrainConfig(), ["lrr=1"])
    with pytest.raises(ValueError, match="--set epochs: expected int, got 'many'"):
        apply_sets(TrainConfig(), ["epochs=many"])
    with pytest.raises(ValueError, match="--set expects key=value"):
        apply_sets(TrainConfig(), ["lr"])


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "missing.yaml", "--out", "x"], "missing.yaml: cannot read"),
    (["eval", "--data", "missing.yaml", "--predictions", "p.json"], "missing.yaml: cannot read"),
    (["train", "--data", "missing.yaml", "--out", "x", "--set", "mosaic=1.5"],
     "TrainConfig.mosaic is a probability in [0, 1], got 1.5"),
    (["train", "--data", "missing.yaml", "--out", "x", "--epochs", "0"], "TrainConfig.epochs must be >= 1, got 0"),
    (["train", "--data", "missing.yaml", "--out", "x", "--image-size", "0"],
     "TrainConfig.image_size must be >= 65 for efficientdet-lite0 (or None: the model's own), got 0"),
    (["train", "--data", "missing.yaml", "--out", "x", "--image-size", "-320"], "TrainConfig.image_size must be >= 65"),
    (["train", "--data", "missing.yaml", "--out", "x", "--device", "foo"], "unknown device 'foo'"),
    (["train", "--data", "missing.yaml", "--out", "x", "--resume", "--exist-ok"],
     "TrainConfig.resume continues the run in out, exist_ok replaces it"),
])
def test_bad_input_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_train_on_a_missing_gpu_is_one_line(data, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "efficientdet train: error: device 'cuda': no CUDA GPU is available here; use --device cpu" in err
    assert err.count("\n") == 1


def quick_train(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), "--image-size", "128", "--batch-size", "4",
            "--workers", "0", "--epochs", "1", *extra]


def test_train_refuses_a_run_folder_in_use_unless_resumed_or_replaced(data, tmp_path, capsys):
    """A finished run is not overwritten by another (its weights, its metrics.jsonl appended to);
    the refusal comes before the dataset is read; --exist-ok starts afresh, without the old files."""
    out = tmp_path / "run"
    assert main(quick_train(data, out, "--set", "eval_every=1")) == 0
    assert {"best.safetensors", "last.safetensors"} <= {p.name for p in (out / "weights").iterdir()}
    capsys.readouterr()
    assert main(["train", "--data", str(tmp_path / "not-read.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"efficientdet train: error: {out}: the run folder is not empty; continue its run with "
                   "--resume, or replace it with --exist-ok\n")
    assert main(quick_train(data, out, "--exist-ok", "--set", "max_steps=1")) == 0  # stops before any epoch ends
    assert "--exist-ok: removed the previous run's config.json, metrics.jsonl, train_state.pt, weights, " \
           "curves.png, val_images" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} - {"tensorboard"} == {"config.json", "data_check.json", "train_state.pt",
                                                                 "weights"}
    assert [p.name for p in (out / "weights").iterdir()] == ["last.safetensors"]


def test_train_out_that_is_a_file_is_one_line(tmp_path, capsys):
    out = tmp_path / "run.txt"
    out.write_text("not a folder")
    assert main(["train", "--data", str(tmp_path / "not-read.yaml"), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"efficientdet train: error: {out}: the run folder is a file; "
                                       "name a folder with --out\n")
    assert out.read_text() == "not a folder"


def fewer_classes(data, folder):
    """The dataset ``data`` without its last category (and that category's boxes)."""
    folder.mkdir()
    for split in ("train", "val"):
        record = json.loads((data.parent / f"{split}.json").read_text())
        last = record["categories"].pop()["id"]
        record["annotations"] = [a for a in record["annotations"] if a["category_id"] != last]
        (folder / f"{split}.json").write_text(json.dumps(record))
    images = data.parent / "images"
    (folder / "data.yaml").write_text(json.dumps({"format": "coco", **{
        split: {"images": str(images), "annotations": f"{split}.json"} for split in ("train", "val")}}))
    return folder / "data.yaml"


def test_resume_on_a_dataset_with_another_class_count_is_one_line(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(quick_train(data, out, "--set", "max_steps=1")) == 0
    capsys.readouterr()
    assert main(quick_train(fewer_classes(data, tmp_path / "three"), out, "--resume")) == 2
    err = capsys.readouterr().err
    assert err == (f"efficientdet train: error: {out / 'train_state.pt'}: the run has 4 classes, the dataset 3; "
                   "--resume needs the run's dataset (or train into a new --out)\n")


def test_batch_of_one_at_a_1x1_top_level_is_refused_saying_what_to_do(data, tmp_path, capsys):
    """BN in training cannot normalise the single value per channel of P7 (1x1 at 128 pixels)."""
    assert main(quick_train(data, tmp_path / "run", "--batch-size", "1")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "efficientdet train: error: batch size 1: BatchNorm cannot train on the 1x1 P7 " \
        "level of one 128x128 image; use a batch of 2 or more" in err and "--set freeze_bn=true" in err


def test_done_line_is_printed_once_under_torchrun(data, tmp_path):
    """Every rank returns from train(); only rank 0, which evaluates, reports."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "efficientdet.cli", *quick_train(data, tmp_path / "run", "--scratch", "--batch-size", "2",
                                                      "--set", "max_steps=1")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("done: ") == 1, proc.stdout


def test_resume_without_state_is_a_clear_error(data, tmp_path, capsys):
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "none"), "--resume", "--workers", "0"]) == 2
    assert "--resume: no training state at" in capsys.readouterr().err


def test_eval_score_threshold_applies_without_nms(data, tmp_path, capsys):
    import statistics

    import torch

    from efficientdet import create_model
    from efficientdet.weights import save_safetensors

    torch.manual_seed(0)
    model = create_model("efficientdet-lite0", num_classes=4, image_size=128)
    with torch.no_grad():  # spread the scores, as above
        for p in model.class_net.parameters():
            p.add_(torch.randn_like(p), alpha=0.5)
    weights = save_safetensors(model, tmp_path / "w.safetensors")
    base = ["eval", "--data", str(data), "--model", "efficientdet-lite0", "--weights", str(weights),
            "--image-size", "128", "--workers", "0", "--save-predictions"]
    assert main([*base, str(tmp_path / "all.json")]) == 0
    scores = [r["score"] for r in json.loads((tmp_path / "all.json").read_text())]
    threshold = statistics.median(scores)
    assert main([*base, str(tmp_path / "kept.json"), "--score-threshold", str(threshold)]) == 0
    kept = [r["score"] for r in json.loads((tmp_path / "kept.json").read_text())]
    assert 0 < len(kept) < len(scores) and min(kept) > threshold


def test_eval_maps_outputs_through_the_label_space_stored_with_the_weights(data, tmp_path, capsys):
    from efficientdet import create_model
    from efficientdet.data import load_dataset_yaml, load_split
    from efficientdet.weights import save_safetensors

    split = load_split(load_dataset_yaml(data), "val")
    model = create_model("efficientdet-lite0", num_classes=split.num_classes, image_size=128)
    saved = {}
    for order, ids in (("dataset", split.label_ids), ("reversed", split.label_ids[::-1])):
        weights = save_safetensors(model, tmp_path / f"{order}.safetensors",
                                   extra={"label_ids": json.dumps(ids), "names": json.dumps(split.names)})
        assert main(["eval", "--data", str(data), "--model", "efficientdet-lite0", "--weights", str(weights),
                     "--image-size", "128", "--workers", "0", "--save-predictions", str(tmp_path / f"{order}.json")]) == 0
        saved[order] = [r["category_id"] for r in json.loads((tmp_path / f"{order}.json").read_text())]
    swap = dict(zip(split.label_ids, split.label_ids[::-1]))
    assert saved["reversed"] == [swap[c] for c in saved["dataset"]] != saved["dataset"]
    unknown = save_safetensors(model, tmp_path / "unknown.safetensors",
                               extra={"label_ids": json.dumps([100 + i for i in range(split.num_classes)])})
    capsys.readouterr()
    assert main(["eval", "--data", str(data), "--model", "efficientdet-lite0", "--weights", str(unknown),
                 "--image-size", "128", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained on category ids [100" in err


def test_recipe_auto_is_resolved_printed_and_recorded_in_config_json(data, tmp_path, capsys):
    """8 images for 1 epoch: auto takes finetune (no stochastic depth, the milder scale jitter), says
    why, and config.json holds the resolved values, which read back as the run's TrainConfig."""
    out = tmp_path / "run"
    assert main(quick_train(data, out, "--set", "max_steps=1", "--set", "new_head_lr=3")) == 0
    printed = capsys.readouterr().out
    assert "recipe: finetune (auto: official for at least 10,000 train images and 50 epochs, finetune otherwise; " \
           "this run: images 8, epochs 1): scale_range (0.8, 1.2), " in printed
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] in printed
    train = config_from_dict(config["train"], TrainConfig)
    assert train.recipe == "finetune" and train.stochastic_depth is False and train.new_head_lr == 3.0
    assert train == dataclasses.replace(TrainConfig(recipe="finetune"), **{
        k: getattr(train, k) for k in ("data", "out", "epochs", "batch_size", "image_size", "workers", "max_steps",
                                       "new_head_lr", "exist_ok", "resume")})
    assert config["model"]["backbone"]["survival_prob"] is None  # Lite0's own is 0.8


def test_recipe_official_keeps_the_model_stochastic_depth_and_set_overrides_its_fields(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(quick_train(data, out, "--recipe", "official", "--set", "max_steps=1",
                            "--set", "scale_range=0.5,1.5")) == 0
    assert "recipe: official (--recipe): scale_range (0.5, 1.5), hflip 0.5," in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["scale_range"] == [0.5, 1.5] and config["train"]["lr"] == 0.08
    assert config["model"]["backbone"]["survival_prob"] == 0.8


@pytest.mark.parametrize("extra, message", [
    (["--recipe", "fast"], "TrainConfig.recipe: unknown recipe 'fast'; recipes: official, finetune, auto"),
    (["--set", "jitter=0.5"], "--set jitter: unknown field; valid: "),
    (["--set", "jitter=0.5"], " (the recipe's: scale_range, hflip, mosaic, photometric, stochastic_depth, lr, "
                              "warmup_init, warmup_epochs, new_head_lr, ema_decay, freeze_bn)"),
    (["--set", "recipe=official"], "--set recipe: the recipe is chosen with --recipe, before --set changes its fields"),
    (["--set", "optim.lr=1"], "--set optim.lr: only loss.<field>"),
    (["--set", "anchors.aspect_ratios=1,0"], "TrainConfig.anchors.aspect_ratios must be positive numbers, got (1.0, 0.0)"),
    (["--set", "anchors.anchor_scale=-2"], "TrainConfig.anchors.anchor_scale must be a positive number or 'auto', "
                                           "got -2.0"),
])
def test_bad_recipe_or_set_is_one_line_naming_the_valid_ones(extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", "missing.yaml", "--out", "x", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def copy_dataset(data, folder):
    """A copy of the module's dataset (its JSON files; the images are shared) to break or change."""
    folder.mkdir()
    for split in ("train", "val"):
        (folder / f"{split}.json").write_text((data.parent / f"{split}.json").read_text())
    (folder / "data.yaml").write_text(json.dumps({"format": "coco", **{
        split: {"images": str(data.parent / "images"), "annotations": f"{split}.json"} for split in ("train", "val")}}))
    return folder / "data.yaml"


def edit_split(path, split, change):
    record = json.loads((path.parent / f"{split}.json").read_text())
    change(record)
    (path.parent / f"{split}.json").write_text(json.dumps(record))
    return path.parent / f"{split}.json"


def test_train_refuses_a_dataset_listing_every_problem_found_in_one_pass(data, tmp_path, capsys):
    """Not one problem per attempt: the negative box, the unknown category (train split) and the
    missing image (val split) in one error, before anything is written."""
    copy = copy_dataset(data, tmp_path / "bad")

    def train_change(record):
        record["annotations"][0]["bbox"] = [1, 1, -5, 5]
        record["annotations"][1]["category_id"] = 77
    train_json = edit_split(copy, "train", train_change)
    val_json = edit_split(copy, "val", lambda r: r["images"][0].__setitem__("file_name", "gone.jpg"))
    assert main(quick_train(copy, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == (f"efficientdet train: error: {copy}: 3 problems in the dataset, the first 20 of each kind "
                        "listed (`efficientdet data check` adds the statistics):")
    assert "  negative box size: 1" in lines and "  unknown class: 1" in lines and "  missing file: 1" in lines
    assert f"    {train_json}: annotation id " in err and "category_id 77 is not in 'categories'" in err
    assert f"    {val_json}: 1 of 4 images missing: " in err
    assert not (tmp_path / "run").exists()


def test_train_refuses_boxes_that_no_anchor_can_match_in_one_line_with_the_fix(data, tmp_path, capsys):
    copy = copy_dataset(data, tmp_path / "dots")
    edit_split(copy, "train", lambda r: [a.__setitem__("bbox", [a["bbox"][0], a["bbox"][1], 1, 1])
                                         for a in r["annotations"]])
    assert main(quick_train(copy, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"efficientdet train: error: {copy}: 0.0% of the ")
    assert err.endswith("training boxes have an anchor with IoU >= 0.5 (efficientdet-lite0 at 128x128, anchor_scale "
                        "3): none can be matched; no larger --image-size, anchors.anchor_scale or "
                        "anchors.aspect_ratios tried gives more; are the boxes in the pixels of their images?\n")
    assert not (tmp_path / "run" / "weights").exists()


def test_anchor_scale_auto_takes_the_best_grid_scale_and_the_weights_carry_it(data, tmp_path, capsys, monkeypatch):
    """Boxes half their size: the scale of the grid that matches the most training boxes (not the
    model's 3) is the run's, printed with the grid after the fit and warnings of the data check, in
    config.json, and in the weights, from which create_model, eval and predict rebuild the anchors."""
    import efficientdet
    from efficientdet.anchor_fit import best_scale, scale_shares
    from efficientdet.config import get_config, override
    from efficientdet.data import load_dataset_yaml, load_split
    from efficientdet.data.check import training_boxes

    def halve(record):
        for a in record["annotations"]:
            a["bbox"] = [*a["bbox"][:2], a["bbox"][2] / 2, a["bbox"][3] / 2]
        record["annotations"][0]["bbox"] = [100, 100, 60, 60]  # clipped to the 128 px image: a warning

    copy = copy_dataset(data, tmp_path / "small")
    train_json = edit_split(copy, "train", halve)
    out = tmp_path / "run"
    assert main(quick_train(copy, out, "--set", "eval_every=1", "--set", "anchors.anchor_scale=auto")) == 0
    printed = capsys.readouterr().out
    split = load_split(load_dataset_yaml(copy), "train")
    config = override(get_config("efficientdet-lite0"), image_size=128, num_classes=split.num_classes)
    boxes, sizes, _ = training_boxes(split)
    shares = scale_shares(boxes, sizes, config, 0.5)
    scale = best_scale(shares, 3.0)
    assert scale != 3.0 and shares[scale] == max(shares.values()) > shares[3.0]
    assert f"anchors.anchor_scale=auto: {scale:g} (train boxes with an anchor of IoU >= 0.5 by scale: 1 " in printed
    assert f"anchor fit (efficientdet-lite0 at 128x128, anchor_scale {scale:g}, aspect ratios 1, 2, 0.5): " in printed
    assert f"warning: box clipped to the image: 1, e.g. {train_json}: annotation id " in printed
    assert printed.index("anchor fit (") < printed.index("epoch=1 ")  # at the start, before any epoch
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["anchors"]["anchor_scale"] == saved["model"]["anchors"]["anchor_scale"] == scale
    check = json.loads((out / "data_check.json").read_text())
    assert check["splits"]["train"]["boxes"] == len(boxes) and check["anchor_fit"]["anchor_scale"] == scale
    assert "box clipped to the image" in check["problems"]["warnings"]
    best = out / "weights" / "best.safetensors"
    assert efficientdet.create_model("efficientdet-lite0", weights=best).config.anchors.anchor_scale == scale
    built = []

    def create_model(*args, **kwargs):
        model = real(*args, **kwargs)
        built.append(model.config.anchors.anchor_scale)
        return model
    real = efficientdet.create_model
    monkeypatch.setattr(efficientdet, "create_model", create_model)
    model_args = ["--model", "efficientdet-lite0", "--weights", str(best), "--image-size", "128", "--workers", "0"]
    assert main(["eval", "--data", str(copy), *model_args]) == 0
    assert main(["predict", *model_args, str(data.parent / "images"), "--out", str(tmp_path / "pred"), "--quiet"]) == 0
    assert built == [scale, scale]


def test_anchor_settings_are_a_nested_section_of_set():
    cfg = apply_sets(TrainConfig(), ["anchors.anchor_scale=auto", "anchors.aspect_ratios=1,2,0.5,4,0.25"])
    assert cfg.anchors.anchor_scale == "auto" and cfg.anchors.aspect_ratios == (1.0, 2.0, 0.5, 4.0, 0.25)
    assert apply_sets(TrainConfig(), ["anchors.anchor_scale=2.5"]).anchors.anchor_scale == 2.5
    assert config_from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))), TrainConfig) == cfg
    with pytest.raises(ValueError, match="TrainConfig.anchors.anchor_scale must be a positive number or 'auto', "
                                         "got 'big'"):
        apply_sets(TrainConfig(), ["anchors.anchor_scale=big"])
    with pytest.raises(ValueError, match="--set anchors.scale: unknown field; valid: anchor_scale, aspect_ratios$"):
        apply_sets(TrainConfig(), ["anchors.scale=2"])
