"""filter_basis.reuse: what a tool may do with an experiment folder (the tools' rules, docs/results.md)."""

import json

import pytest

from filter_basis import reuse
from filter_basis.engine.resume import plain_options
from image_classification.tree import TREE

TREE_NAME = "image_classification"
ARGV = ["--model", "ResNet_Basis", "--depth", "8", "--data_train", "Digits", "--data_test", "Digits",
        "--epochs", "3", "--save", "run"]


def make_run(folder, argv=ARGV, made_by="tool", done=3, state=False, basis_counts=None, extra=None):
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps({**plain_options(TREE.parse_args(argv)), **(extra or {})}))
    (folder / "results.json").write_text(json.dumps(
        [{"epoch": e, "metrics": {"top1_error": 5.0}, "train_loss": 1.0} for e in range(1, done + 1)]))
    (folder / "run.json").write_text(json.dumps({
        "format": 1, "tree": TREE_NAME, "kind": "training", "made_by": made_by, "epochs_planned": 3,
        "epochs_done": done, "status": "training", "best": None, "basis_counts": basis_counts}))
    if state:
        (folder / "training_state.pt").write_bytes(b"state")
    return folder


def test_decisions_follow_the_record(tmp_path):
    assert reuse.decide(tmp_path / "absent", "tool", TREE_NAME, ARGV).action == reuse.START
    (tmp_path / "empty").mkdir()
    assert reuse.decide(tmp_path / "empty", "tool", TREE_NAME, ARGV).action == reuse.START
    assert reuse.decide(make_run(tmp_path / "done"), "tool", TREE_NAME, ARGV).action == reuse.FINISHED
    half = make_run(tmp_path / "half", done=2, state=True)
    assert reuse.decide(half, "tool", TREE_NAME, ARGV).action == reuse.CONTINUE
    longer = [*ARGV, "--epochs", "5", "--n_threads", "3", "--print_every", "7"]  # may change on resume
    assert reuse.decide(make_run(tmp_path / "more", state=True), "tool", TREE_NAME, longer).action == \
        reuse.CONTINUE
    with pytest.raises(reuse.Drifted) as drifted:
        reuse.decide(half, "tool", TREE_NAME, [*ARGV, "--lr", "0.05", "--depth", "14"])
    assert sorted(drifted.value.changes) == [("depth", 14, 8), ("lr", 0.05, 0.1)]
    assert "--depth 14 (saved 8)" in str(drifted.value) and "--lr 0.05 (saved 0.1)" in str(drifted.value)
    with pytest.raises(reuse.Refused, match="holds 2 trained epoch.s. but no training_state.pt"):
        reuse.decide(make_run(tmp_path / "stuck", done=2), "tool", TREE_NAME, ARGV)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(reuse.Refused, match="is not an experiment folder"):
        reuse.decide(tmp_path / "mine", "tool", TREE_NAME, ARGV)


def test_a_target_compression_run_is_compared_with_the_counts_it_chose(tmp_path):
    chosen = {"n_basis1": 5, "n_basis2": 9, "n_basis3": 17}
    (tmp_path / "dense.pt").write_bytes(b"")  # the options name it; nothing reads it here
    argv = [*ARGV, "--target_compression", "0.3", "--basis_init", str(tmp_path / "dense.pt")]
    run = make_run(tmp_path / "tc", argv=argv, extra=chosen, basis_counts={"options": chosen})
    assert reuse.decide(run, "tool", TREE_NAME, argv).action == reuse.FINISHED
    with pytest.raises(reuse.Drifted, match="--target_compression 0.5 .saved 0.3."):
        reuse.decide(run, "tool", TREE_NAME, [*argv, "--target_compression", "0.5"])
    with pytest.raises(reuse.Drifted, match="--target_flops 0.5 .saved null."):
        reuse.decide(run, "tool", TREE_NAME, [*argv, "--target_flops", "0.5"])


def test_a_target_flops_run_is_compared_with_the_counts_it_chose(tmp_path):
    chosen = {"n_basis1": 4, "n_basis2": 11, "n_basis3": 20}
    (tmp_path / "dense.pt").write_bytes(b"")
    argv = [*ARGV, "--target_flops", "0.5", "--basis_init", str(tmp_path / "dense.pt")]
    run = make_run(tmp_path / "tf", argv=argv, extra=chosen,
                   basis_counts={"target_compression": None, "target_flops": 0.5, "options": chosen})
    assert reuse.decide(run, "tool", TREE_NAME, argv).action == reuse.FINISHED
    with pytest.raises(reuse.Drifted, match="--target_flops 0.4 .saved 0.5."):
        reuse.decide(run, "tool", TREE_NAME, [*argv, "--target_flops", "0.4"])


def test_only_a_tools_own_runs_or_asked_experiment_folders_are_replaced(tmp_path, capsys):
    assert reuse.may_replace(tmp_path / "absent", "tool").action == reuse.START
    assert reuse.may_replace(make_run(tmp_path / "own"), "tool").action == reuse.REPLACE
    other = make_run(tmp_path / "other", made_by="paper")
    with pytest.raises(reuse.Refused, match="holds a run made by paper: tool replaces only its own runs"):
        reuse.may_replace(other, "tool")
    user = make_run(tmp_path / "user", made_by=None)
    with pytest.raises(reuse.Refused, match=r"not made by a tool \(no made_by in run.json\)"):
        reuse.may_replace(user, "tool")
    assert reuse.may_replace(user, "tool", asked=True).action == reuse.REPLACE
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_text("x")
    with pytest.raises(reuse.Refused, match="is not an experiment folder"):
        reuse.may_replace(tmp_path / "files", "tool", asked=True)

    # the command line of shell scripts: the decision on stdout, a refusal as one line and exit 2
    assert reuse.main(["tool", TREE_NAME, str(tmp_path / "own"), "--replace"]) == 0
    assert capsys.readouterr().out == "replace\n"
    assert reuse.main(["tool", TREE_NAME, str(tmp_path / "own"), "--", *ARGV]) == 0
    assert capsys.readouterr().out == "finished\n"
    assert reuse.main(["tool", TREE_NAME, str(other), "--replace"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"error: {other} holds a run made by paper")
    assert len(captured.err.splitlines()) == 1


def test_a_test_only_folder_is_finished_only_for_the_same_test_sets(tmp_path):
    argv = ["--model", "ResNet", "--depth", "8", "--data_test", "Digits", "--test_only", "--save", "t"]
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "args.json").write_text(json.dumps(plain_options(TREE.parse_args(argv))))
    (folder / "results.json").write_text(json.dumps([{"epoch": 0, "metrics": {"top1_error": 5.0}}]))
    (folder / "run.json").write_text(json.dumps({"format": 1, "tree": TREE_NAME, "kind": "test",
                                                 "made_by": "tool", "epochs_planned": 0, "epochs_done": 0,
                                                 "status": "finished", "best": None}))
    assert reuse.decide(folder, "tool", TREE_NAME, argv).action == reuse.FINISHED
    with pytest.raises(reuse.Drifted, match="--data_test Synthetic .saved Digits."):
        reuse.decide(folder, "tool", TREE_NAME, [*argv, "--data_test", "Synthetic"])
