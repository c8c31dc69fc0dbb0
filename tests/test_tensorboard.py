"""--tensorboard: the per-epoch numbers (and SR test images) read back from the event files."""

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from filter_basis.engine import run
from image_classification import option as cls_option
from image_classification.tree import TREE as CLS_TREE
from super_resolution import option as sr_option
from super_resolution.tree import TREE as SR_TREE

pytestmark = pytest.mark.usefixtures("one_thread")

CLS = ["--model", "ResNet", "--depth", "8", "--data_train", "Synthetic", "--data_test", "Synthetic",
       "--n_train", "64", "--n_test", "16", "--batch_size", "16", "--cpu", "--n_threads", "0",
       "--print_every", "1000"]


def events(folder):
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator, tag):
    return [(e.step, e.value) for e in accumulator.Scalars(tag)]


def test_classification_epochs_are_written_for_tensorboard_and_resumed_runs_continue_them(tmp_path):
    argv = CLS + ["--dir_save", str(tmp_path), "--save", "tb", "--tensorboard", "--lr", "0.05",
                  "--decay", "step-1", "--gamma", "0.5"]
    run(CLS_TREE, cls_option.parse_args(argv + ["--epochs", "2"]))
    run(CLS_TREE, cls_option.parse_args([a for a in argv if a not in ("--save", "tb")]
                                        + ["--load", "tb", "--epochs", "3"]))
    results = json.loads((tmp_path / "tb" / "results.json").read_text())
    board = events(tmp_path / "tb" / "tensorboard")
    tags = set(board.Tags()["scalars"])
    assert {"train/loss", "train/CE", "train/learning_rate", "train/samples_per_s", "train/epoch_s",
            "test/top1_error", "test/top5_error", "test/loss"} <= tags
    assert scalars(board, "train/loss") == [(r["epoch"], pytest.approx(r["train_loss"], rel=1e-6))
                                            for r in results]
    assert scalars(board, "test/top1_error") == [(r["epoch"], pytest.approx(r["metrics"]["top1_error"]))
                                                 for r in results]
    assert scalars(board, "train/learning_rate") == [(r["epoch"], pytest.approx(r["lr"])) for r in results]
    assert [r["lr"] for r in results] == pytest.approx([0.05, 0.025, 0.025])  # decayed after epoch 1
    # the one term of --loss 1*CE is the whole loss (mean over the same batches)
    assert [v for _, v in scalars(board, "train/CE")] == pytest.approx([v for _, v in
                                                                         scalars(board, "train/loss")])


def test_without_the_option_nothing_is_written(tmp_path):
    argv = CLS + ["--dir_save", str(tmp_path), "--save", "plain", "--epochs", "1"]
    run(CLS_TREE, cls_option.parse_args(argv))
    assert not (tmp_path / "plain" / "tensorboard").exists()


def test_super_resolution_writes_psnr_and_a_few_test_images(tmp_path):
    argv = ["--model", "EDSR", "--n_resblocks", "1", "--n_feats", "8", "--scale", "2", "--cpu", "--n_threads",
            "0", "--data_train", "Photos", "--data_test", "Photos", "--patch_size", "32", "--batch_size", "4",
            "--test_every", "2", "--epochs", "1", "--dir_data", str(tmp_path / "data"), "--dir_save",
            str(tmp_path), "--save", "sr", "--tensorboard"]
    trainer = run(SR_TREE, sr_option.parse_args(argv))
    board = events(tmp_path / "sr" / "tensorboard")
    psnr = json.loads((tmp_path / "sr" / "results.json").read_text())[0]["metrics"]["Photos_x2"]["psnr"]
    assert scalars(board, "test/Photos_x2/psnr") == [(1, pytest.approx(psnr))]
    dataset = trainer.test_loaders["Photos"].dataset
    names = [dataset[i][2] for i in range(3)]
    images = board.Tags()["images"]
    assert sorted(images) == sorted([f"images/Photos_x2/{n}" for n in names]
                                    + [f"images/Photos_x2/{n}/HR" for n in names])
    first = board.Images(f"images/Photos_x2/{names[0]}")[0]
    lr, hr, _ = dataset[0]
    assert first.step == 1 and (first.height, first.width) == tuple(hr.shape[1:])
