"""The engine's loop in-process: experiment folder contents, results schema, folder policy, skipped and
non-finite batches, --summary, and the --n_GPUs message."""

import dataclasses
import functools
import json

import pytest
import torch
import torch.nn.functional as F

from filter_basis.engine import Trainer, TrainingStopped, cli_main, run
from filter_basis.engine.checkpoint import load_checkpoint
from filter_basis.errors import OptionError
from image_classification import option
from image_classification.tree import TREE

TINY = ["--model", "ResNet", "--depth", "8", "--data_train", "Synthetic", "--data_test", "Synthetic",
        "--n_train", "64", "--n_test", "32", "--batch_size", "16", "--cpu", "--n_threads", "0"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(tmp_path, *extra):
    """TINY's options; a --test_only run tests the saved weights of a freshly built model (a test run
    needs weights to test)."""
    weights = []
    if "--test_only" in extra:
        weights = ["--pretrained", str(tmp_path / "weights.pt")]
        tmp_path.mkdir(parents=True, exist_ok=True)
        torch.save(TREE.build_model(option.parse_args(TINY)).state_dict(), weights[1])
    return option.parse_args(TINY + ["--dir_save", str(tmp_path)] + weights + list(extra))


RESULT_KEYS = {"epoch", "metrics", "train_loss", "lr", "time_s", "data_time_s", "samples_per_s"}
SUMMARY_KEYS = {"model", "params", "weight_params", "flops", "baseline", "baseline_weight_params",
                "compression_pct", "train_flops", "basis_forms"}


def test_experiment_folder_holds_the_contract_files(tmp_path):
    trainer = run(TREE, tiny(tmp_path, "--epochs", "2", "--save", "run", "--save_models", "--lr", "0.05"))
    folder = tmp_path / "run"
    assert json.loads((folder / "args.json").read_text())["model"] == "ResNet"
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    assert summary["params"] == sum(p.numel() for p in trainer.model.parameters())
    results = json.loads((folder / "results.json").read_text())
    assert [r["epoch"] for r in results] == [1, 2]
    for record in results:
        assert set(record) == RESULT_KEYS
        assert set(record["metrics"]) == {"top1_error", "top5_error", "loss"}
        assert 0 <= record["metrics"]["top1_error"] <= 100 and record["samples_per_s"] > 0
        assert record["lr"] == 0.05 and record["train_loss"] > 0
    log = (folder / "log.txt").read_text()
    assert "[Epoch 2] test: loss" in log and "train loss" in log
    for name in ("model_latest.pt", "model_best.pt", "model_1.pt", "model_2.pt"):
        assert set(load_checkpoint(folder / "model" / name)) == set(trainer.model.state_dict())
    latest = load_checkpoint(folder / "model" / "model_latest.pt")
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(latest[key], value)
    best_epoch = min(results, key=lambda r: r["metrics"]["top1_error"])["epoch"]
    assert trainer.best["epoch"] == best_epoch
    state = load_checkpoint(folder / "training_state.pt")
    assert state["epoch"] == 2 and {"model", "optimizer", "scheduler", "scaler", "rng", "best"} <= set(state)
    for name in ("train_loss", "top1_error", "top5_error", "loss"):
        assert (folder / f"plot_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_folder_is_refused_unless_reset(tmp_path):
    """An experiment folder of an older version with a trained epoch and no training state."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "args.json").write_text('{"model": "ResNet", "epochs": 3}\n')
    (tmp_path / "run" / "results.json").write_text('[{"epoch": 1, "metrics": {}, "train_loss": 1.0}]\n')
    (tmp_path / "run" / "log.txt").write_text("an earlier run\n")
    with pytest.raises(OptionError, match="1 trained epoch.*no training_state.pt.*--reset"):
        run(TREE, tiny(tmp_path, "--save", "run", "--test_only"))
    assert (tmp_path / "run" / "log.txt").read_text() == "an earlier run\n"
    run(TREE, tiny(tmp_path, "--save", "run", "--test_only", "--reset"))
    assert "an earlier run" not in (tmp_path / "run" / "log.txt").read_text()


def test_test_only_records_one_evaluation_without_training_fields(tmp_path):
    run(TREE, tiny(tmp_path, "--save", "t", "--test_only"))
    results = json.loads((tmp_path / "t" / "results.json").read_text())
    assert len(results) == 1 and set(results[0]) == {"epoch", "metrics", "weights"}
    assert results[0]["epoch"] == 0
    assert results[0]["weights"] == str(tmp_path / "weights.pt")  # the file it tested


def test_summary_prints_json_last_and_writes_nothing(tmp_path, capsys):
    assert run(TREE, tiny(tmp_path / "never", "--summary", "--model", "ResNet_Basis")) is None
    lines = capsys.readouterr().out.strip().splitlines()
    info = json.loads(lines[-1])
    assert set(info) == SUMMARY_KEYS and info["baseline"] == "ResNet" and len(lines) > 3
    ratio = info["weight_params"] / info["baseline_weight_params"]
    assert info["compression_pct"] == pytest.approx(100 * ratio)
    assert not (tmp_path / "never").exists()


def test_n_gpus_without_torchrun_shows_the_command(tmp_path, capsys):
    assert cli_main(TREE, TINY + ["--dir_save", str(tmp_path), "--n_GPUs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "torchrun --standalone --nproc_per_node 2" in err
    assert list(tmp_path.iterdir()) == []


class _Diverging(Trainer):
    """Classification training whose loss turns into NaN: the engine must stop, not train on garbage."""

    def train_step(self, batch):
        images, labels = batch
        logits = self.net(self.to_device(images))
        return self.loss(logits, labels) * float("nan"), labels.shape[0]

    test_step = TREE.trainer_class.test_step
    best_key = TREE.trainer_class.__dict__["best_key"]  # the tree's ranking (a classmethod)


def test_repeated_non_finite_losses_stop_training(tmp_path):
    tree = dataclasses.replace(TREE, trainer_class=_Diverging)
    with pytest.raises(TrainingStopped, match="not finite for 5 batches in a row"):
        run(tree, tiny(tmp_path, "--save", "nan", "--n_train", "96"))


def test_skip_threshold_skips_batches_whose_loss_explodes(tmp_path):
    # error_last starts at 1e8 (official), so any CE above 1e-8 x 1e8 = 1 is skipped: nothing trains.
    args = tiny(tmp_path, "--save", "skip", "--epochs", "1", "--skip_threshold", "1e-8")
    trainer = run(TREE, args)
    initial = option.parse_args(TINY)
    torch.manual_seed(initial.seed)
    fresh = TREE.build_model(initial)
    for key, value in fresh.state_dict().items():
        if "running" not in key and "num_batches" not in key:
            assert torch.equal(trainer.model.state_dict()[key], value), key
    assert "4 batches skipped" in (tmp_path / "skip" / "log.txt").read_text()


def test_test_metrics_are_percent_errors_and_mean_cross_entropy(tmp_path):
    args = tiny(tmp_path, "--save", "m", "--test_only")
    trainer = run(TREE, args)
    images = torch.stack([trainer.test_loaders["Synthetic"].dataset[i][0] for i in range(32)])
    labels = torch.tensor([trainer.test_loaders["Synthetic"].dataset[i][1] for i in range(32)])
    trainer.model.eval()
    with torch.no_grad():
        logits = trainer.model(images)
    metrics = json.loads((tmp_path / "m" / "results.json").read_text())[0]["metrics"]
    top5 = (logits.topk(5, 1).indices == labels[:, None]).any(1)
    assert metrics["top1_error"] == pytest.approx(100 * (logits.argmax(1) != labels).float().mean().item())
    assert metrics["top5_error"] == pytest.approx(100 * (~top5).float().mean().item())
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)


def with_activation_dtypes(tree):
    """``(tree, built)``: ``built[-1]`` lists the dtypes of the first convolution's outputs of the model
    built last (the one trained; --summary's is built before it)."""
    built = []

    def build_model(args):
        model = tree.build_model(args)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        dtypes = []
        conv.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
        built.append(dtypes)
        return model

    return dataclasses.replace(tree, build_model=build_model), built


@pytest.mark.parametrize("extra", [["--amp", "bf16"], ["--channels_last"]], ids=["amp-bf16", "channels-last"])
def test_speed_options_train_on_the_cpu(tmp_path, extra):
    tree, built = with_activation_dtypes(TREE)
    trainer = run(tree, tiny(tmp_path, "--save", "fast", "--epochs", "1", "--n_train", "32", *extra))
    record = json.loads((tmp_path / "fast" / "results.json").read_text())[0]
    assert torch.isfinite(torch.tensor(record["train_loss"])) and record["metrics"]["loss"] > 0
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == ("--channels_last" in extra)
    # autocast really ran the convolutions in bfloat16, in training (2 batches) and testing (1 batch)
    assert built[-1] == [torch.bfloat16 if "bf16" in extra else torch.float32] * 3
    assert conv.weight.dtype == torch.float32  # the weights themselves stay float32


def test_precision_half_trains_float16_weights_and_warns_once(tmp_path, capsys):
    tree, built = with_activation_dtypes(TREE)
    trainer = run(tree, tiny(tmp_path, "--save", "half", "--epochs", "1", "--n_train", "16",
                             "--precision", "half"))
    assert built[-1] == [torch.float16] * 2
    saved = load_checkpoint(tmp_path / "half" / "model" / "model_latest.pt")
    assert {v.dtype for v in saved.values() if v.is_floating_point()} == {torch.float16}
    assert all(p.dtype == torch.float16 for p in trainer.model.parameters())
    warnings = [line for line in capsys.readouterr().err.splitlines() if "--precision half" in line]
    assert len(warnings) == 1 and "--amp fp16" in warnings[0] and "rounded away" in warnings[0]
    assert (tmp_path / "half" / "log.txt").read_text().count("--amp fp16") == 1
    run(TREE, tiny(tmp_path, "--save", "half_test", "--test_only", "--precision", "half"))
    assert "--precision half" not in capsys.readouterr().err  # testing in float16 loses nothing


def test_compile_trains_through_a_compiled_graph_with_the_same_results(tmp_path, monkeypatch):
    # Dynamo's "eager" backend captures the graphs as --compile does without inductor's C++ build time.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    short = ["--epochs", "1", "--n_train", "32"]
    compiled = run(TREE, tiny(tmp_path, "--save", "compiled", "--compile", *short))
    assert compiled.net._orig_mod is compiled.model
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    run(TREE, tiny(tmp_path, "--save", "eager", *short))
    outcome = [json.loads((tmp_path / n / "results.json").read_text())[0] for n in ("compiled", "eager")]
    assert outcome[0]["train_loss"] == pytest.approx(outcome[1]["train_loss"], rel=1e-5)
    assert outcome[0]["metrics"] == pytest.approx(outcome[1]["metrics"], rel=1e-5)
    torch._dynamo.reset()


CUDA_OPTIONS = [["--amp", "fp16"], ["--amp", "bf16", "--channels_last"], ["--precision", "half"],
                ["--compile"]]
CUDA_ACTIVATIONS = [torch.float16, torch.bfloat16, torch.float16, None]


@pytest.mark.cuda
@pytest.mark.parametrize("extra, activations", list(zip(CUDA_OPTIONS, CUDA_ACTIVATIONS)),
                         ids=["amp-fp16", "amp-bf16-cl", "half", "compile"])
def test_cuda_training_with_speed_options(tmp_path, extra, activations):
    on_gpu = [a for a in TINY if a != "--cpu"]
    args = option.parse_args(on_gpu + ["--dir_save", str(tmp_path), "--save", "gpu", "--epochs", "2"] + extra)
    tree, built = with_activation_dtypes(TREE)
    torch._dynamo.reset()
    trainer = run(tree, args)
    assert trainer.device.type == "cuda"
    assert trainer.scaler.is_enabled() == (extra == ["--amp", "fp16"])
    results = json.loads((tmp_path / "gpu" / "results.json").read_text())
    assert [r["epoch"] for r in results] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in results)
    assert 0 <= results[-1]["metrics"]["top1_error"] <= 100
    state = load_checkpoint(tmp_path / "gpu" / "training_state.pt")
    assert state["rng"][0]["cuda"]  # the CUDA generator state is kept for resuming
    if activations is not None:  # the convolutions really ran in the chosen format
        assert built[-1] and set(built[-1]) == {activations}
    weights = {v.dtype for v in state["model"].values() if v.is_floating_point()}
    assert weights == ({torch.float16} if "half" in extra else {torch.float32})
    if "--compile" in extra:  # the model ran as a compiled graph, not eagerly
        assert trainer.net._orig_mod is trainer.model
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
