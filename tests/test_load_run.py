"""filter_basis.load_run: the model of an experiment folder, built from its options, with its weights;
the tree is found by name at run time; the documented fuse + ONNX export works on it."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from threads import single_thread

import filter_basis
from filter_basis.engine import run, trees
from filter_basis.engine.checkpoint import load_checkpoint
from filter_basis.engine.record import NotAnExperiment
from filter_basis.errors import CheckpointError, OptionError
from image_classification import option
from image_classification.tree import TREE

TRAIN = ["--model", "ResNet_Basis", "--depth", "8", "--k_size2", "1", "--basis_size1", "8", "--n_basis1", "6",
         "--data_train", "Synthetic", "--data_test", "Synthetic", "--n_train", "64", "--n_test", "40",
         "--batch_size", "16", "--cpu", "--n_threads", "0", "--epochs", "2", "--lr", "0.05"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(folder, trainer)`` of a finished 2-epoch ResNet_Basis run of non-default size."""
    root = tmp_path_factory.mktemp("load_run")
    with single_thread():
        trainer = run(TREE, option.parse_args(TRAIN + ["--dir_save", str(root), "--save", "run"]))
    return root / "run", trainer


def _test_images(trainer):
    dataset = trainer.test_loaders["Synthetic"].dataset
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.tensor([dataset[i][1] for i in range(len(dataset))])
    return images, labels


def test_the_latest_model_is_the_one_the_run_ended_with(trained):
    folder, trainer = trained
    model = filter_basis.load_run(folder, checkpoint="latest")
    assert not model.training
    images, labels = _test_images(trainer)
    with torch.no_grad():
        expected = trainer.model.eval()(images)
        got = model(images)
    assert torch.equal(got, expected)
    # and its top-1 error is the run's last recorded one
    results = json.loads((folder / "results.json").read_text())
    error = 100 * (got.argmax(1) != labels).float().mean().item()
    assert error == pytest.approx(results[-1]["metrics"]["top1_error"])


def test_the_default_checkpoint_is_the_best_model(trained):
    folder, _ = trained
    model = filter_basis.load_run(folder)
    saved = load_checkpoint(folder / "model" / "model_best.pt")
    state = model.state_dict()
    assert set(state) == set(saved) and all(torch.equal(state[k], saved[k]) for k in saved)
    first = next(m for m in model.modules() if isinstance(m, filter_basis.BasisConv2d))
    assert (first.basis_size, first.n_basis) == (8, 6)  # --basis_size1 8 --n_basis1 6 came from the run


def test_the_tree_is_found_by_the_name_the_record_holds(trained, tmp_path, monkeypatch):
    folder, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    asked = []
    real = trees.find_tree
    monkeypatch.setattr(trees, "find_tree", lambda name: asked.append(name) or real(name))
    (copy / "run.json").write_text(json.dumps({"format": 1, "tree": "image_classification"}))
    filter_basis.load_run(copy)
    assert set(asked) == {"image_classification"}
    asked.clear()
    (copy / "run.json").unlink()  # a run written before run.json: its options tell the tree
    filter_basis.load_run(copy)
    assert "image_classification" in asked
    (copy / "run.json").write_text(json.dumps({"format": 1, "tree": "speech"}))
    with pytest.raises(OptionError, match="unknown tree 'speech'"):
        filter_basis.load_run(copy)


def test_a_super_resolution_run(tmp_path):
    """A SR folder (options and weights as the engine writes them): the model of its options and weights."""
    from super_resolution.model import build_model
    from super_resolution.option import parse_args

    args = parse_args(["--model", "EDSR_Basis", "--n_resblocks", "2", "--n_feats", "16", "--basis_size", "8",
                       "--n_basis", "4", "--scale", "3", "--res_scale", "0.1"])
    torch.manual_seed(3)
    model = build_model(args)
    (tmp_path / "model").mkdir()
    torch.save(model.state_dict(), tmp_path / "model" / "model_7.pt")
    (tmp_path / "args.json").write_text(json.dumps(vars(args), default=str))
    (tmp_path / "log.txt").write_text("")  # (args.json with log.txt: an experiment folder of any version)
    loaded = filter_basis.load_run(tmp_path, checkpoint=7)
    lr = torch.rand(1, 3, 6, 5) * 255
    with torch.no_grad():
        assert torch.equal(loaded(lr), model.eval()(lr)) and loaded(lr).shape == (1, 3, 18, 15)
    same = filter_basis.load_run(tmp_path, checkpoint="epoch7")
    assert same.state_dict().keys() == model.state_dict().keys()


def test_bad_checkpoints_and_folders_are_one_clear_error(trained, tmp_path):
    folder, _ = trained
    with pytest.raises(OptionError, match="expected 'best', 'latest' or an epoch number"):
        filter_basis.load_run(folder, checkpoint="worst")
    with pytest.raises(CheckpointError, match=r"model_5\.pt does not exist .*--save_models"):
        filter_basis.load_run(folder, checkpoint=5)
    with pytest.raises(NotAnExperiment, match="is not an experiment folder"):
        filter_basis.load_run(tmp_path)


def test_loading_a_run_imports_no_tree_before_it_reads_the_record(repo_root):
    code = ("import sys, filter_basis, filter_basis.engine.evaluation; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('image_classification', 'super_resolution')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning",
                            "ignore::UserWarning")
def test_the_documented_fuse_and_onnx_export(trained, tmp_path):
    """docs/testing.md: load_run -> fuse -> torch.onnx.export; the ONNX graph computes the run's model."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    folder, trainer = trained
    model = filter_basis.load_run(folder)
    fused = filter_basis.fuse(model)
    x = _test_images(trainer)[0][:4]
    path = tmp_path / "run.onnx"
    torch.onnx.export(fused, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert "BatchNormalization" not in [node.op_type for node in graph.graph.node]
    (y,) = ReferenceEvaluator(graph).run(None, {"x": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.allclose(y, expected, rtol=1e-4, atol=1e-4)
