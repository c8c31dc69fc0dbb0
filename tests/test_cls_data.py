"""Classification data: Synthetic, the CIFAR folder readers, preprocessing, subsets, errors, losses."""

import argparse
import os
import pickle
import stat

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from filter_basis.errors import DataError, OptionError, UserError
from image_classification.data import build_test_sets, build_train_set, num_classes
from image_classification.data.transforms import cifar_transform
from image_classification.loss import LOSS_TYPES

# Reference facts (docs/official-code.md#classification-data-and-training), in 8-bit pixel units.
MEAN_255 = (125.3, 123.0, 113.9)
STD_255 = (63.0, 62.1, 66.7)


def data_args(**overrides):
    values = dict(data_train="Synthetic", data_test="Synthetic", dir_data="/nonexistent", download=False,
                  n_train=0, n_test=0, no_flip=False, crop=1)
    values.update(overrides)
    return argparse.Namespace(**values)


def cifar_batch(data, label_key, labels):
    """One batch as the originals hold it: numpy pixels, a list of int labels, str and bytes entries."""
    return {"batch_label": "testing batch 1 of 1", label_key: labels, "data": data,
            "filenames": [f"img_{i}.png".encode() for i in range(len(labels))], "n": np.int64(len(labels))}


def write_cifar(root, folder, files, label_key, n_per_file, num_classes, seed=0, protocol=2):
    """A tiny folder in torchvision's CIFAR python format (pickle protocol 2, as the originals, unless
    ``protocol`` says otherwise); returns {file: (data, labels)}."""
    rng = np.random.default_rng(seed)
    (root / folder).mkdir(parents=True)
    written = {}
    for name in files:
        data = rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8)
        labels = rng.integers(0, num_classes, n_per_file).tolist()
        with open(root / folder / name, "wb") as f:
            pickle.dump(cifar_batch(data, label_key, labels), f, protocol=protocol)
        written[name] = (data, labels)
    return written


def unnormalise(x):
    mean = torch.tensor(MEAN_255).view(3, 1, 1) / 255
    std = torch.tensor(STD_255).view(3, 1, 1) / 255
    return (x * std + mean) * 255


# ---------------------------------------------------------------------------- Synthetic
def test_synthetic_is_deterministic_and_sized():
    args = data_args()
    a, b = build_train_set(args), build_train_set(args)
    assert len(a) == 1000 and len(build_test_sets(args)["Synthetic"]) == 200
    test_a, test_b = build_test_sets(args)["Synthetic"], build_test_sets(args)["Synthetic"]
    for i in (0, 17, 199):
        assert torch.equal(test_a[i][0], test_b[i][0]) and test_a[i][1] == test_b[i][1]
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images[:200], test_a.images)
    assert set(a.labels.tolist()) == set(range(10)) and num_classes("Synthetic") == 10


def test_synthetic_classes_are_learnable():
    """Images of one class share a pattern: the nearest class mean (from the training split) labels
    the test split far above chance."""
    args = data_args()
    train, test = build_train_set(args), build_test_sets(args)["Synthetic"]
    means = torch.stack([train.images[train.labels == c].float().mean(0) for c in range(10)])
    dist = torch.cdist(test.images.float().flatten(1), means.flatten(1))
    assert (dist.argmin(1) == test.labels).float().mean() > 0.9


def test_items_are_normalised_float_tensors_and_int_labels():
    image, label = build_test_sets(data_args())["Synthetic"][3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and isinstance(label, int)


# ---------------------------------------------------------------------------- preprocessing
def test_cifar_normalisation_constants():
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[:, :, 16:] = 255
    out = cifar_transform(train=False)(image)
    for c in range(3):
        assert out[c, 0, 0].item() == pytest.approx(-MEAN_255[c] / STD_255[c], rel=1e-5)
        assert out[c, 0, 31].item() == pytest.approx((255 - MEAN_255[c]) / STD_255[c], rel=1e-5)


def _white_right_half_columns(no_flip, draws=24):
    """For an image black on the left half and white on the right, whether output columns 20..27 are
    white in each augmented draw (always, rows 4..27, without a flip: the crop shifts by at most 4)."""
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[:, :, 16:] = 255
    transform = cifar_transform(train=True, flip=not no_flip)
    torch.manual_seed(0)
    results = []
    for _ in range(draws):
        out = unnormalise(transform(image))
        assert out.shape == (3, 32, 32)
        values = out.round()
        assert bool(((values == 0) | (values == 255)).all()), "padding must be black in pixel space"
        results.append(bool((values[:, 4:28, 20:28] == 255).all()))
    return results


def test_training_augmentation_crops_with_black_padding_and_flips():
    assert not all(_white_right_half_columns(no_flip=False))


def test_no_flip_turns_the_flip_off():
    assert all(_white_right_half_columns(no_flip=True))


def test_training_crop_moves_the_image():
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[:, 8:24, 8:24] = 255
    transform = cifar_transform(train=True, flip=False)
    torch.manual_seed(1)
    outs = {tuple(unnormalise(transform(image)).round()[0].nonzero().min(0).values.tolist())
            for _ in range(20)}
    assert len(outs) > 1 and all(4 <= r <= 12 and 4 <= c <= 12 for r, c in outs)


# ---------------------------------------------------------------------------- CIFAR folders
def test_cifar10_folder_is_read(tmp_path):
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = write_cifar(tmp_path, "cifar-10-batches-py", files, "labels", 4, 10)
    args = data_args(data_train="CIFAR10", data_test="CIFAR10", dir_data=str(tmp_path))
    train, test = build_train_set(args), build_test_sets(args)["CIFAR10"]
    assert len(train) == 20 and len(test) == 4
    expected = torch.as_tensor(np.concatenate([written[f][0] for f in files[:5]])).view(-1, 3, 32, 32)
    assert torch.equal(train.images, expected)
    assert train.labels.tolist() == sum((written[f][1] for f in files[:5]), [])
    image, label = test[2]
    assert label == written["test_batch"][1][2]
    pixels = torch.as_tensor(written["test_batch"][0][2]).view(3, 32, 32).float()
    assert torch.allclose(unnormalise(image), pixels, atol=1e-3)


def test_cifar100_folder_is_read_with_fine_labels(tmp_path):
    written = write_cifar(tmp_path, "cifar-100-python", ["train", "test"], "fine_labels", 6, 100)
    args = data_args(data_train="CIFAR100", data_test="CIFAR100", dir_data=str(tmp_path))
    assert build_train_set(args).labels.tolist() == written["train"][1]
    assert len(build_test_sets(args)["CIFAR100"]) == 6 and num_classes("CIFAR100") == 100


def test_missing_cifar_folder_is_a_data_error(tmp_path):
    args = data_args(data_train="CIFAR10", dir_data=str(tmp_path))
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        build_train_set(args)


@pytest.fixture
def cifar10_archive(tmp_path, monkeypatch):
    """A CIFAR-10 tarball written by the test and served over HTTP from 127.0.0.1 to torchvision's real
    download code (its URL and MD5 patched in; no network); yields the files it holds."""
    import functools
    import hashlib
    import http.server
    import tarfile
    import threading

    import torchvision.datasets

    source = tmp_path / "source"
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = write_cifar(source, "cifar-10-batches-py", files, "labels", 2, 10)
    for path in (source / "cifar-10-batches-py").iterdir():
        path.chmod(0o600)  # modes stored in the archive: the unpacked folder must not keep them
    served = tmp_path / "served"
    served.mkdir()
    archive = served / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url",
                        f"http://127.0.0.1:{server.server_address[1]}/{archive.name}")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", md5)
    yield written
    server.shutdown()
    server.server_close()
    thread.join()


def test_download_fetches_checks_and_unpacks_the_archive_only_with_the_option(tmp_path, cifar10_archive):
    """--download runs torchvision's download code on the archive (served from 127.0.0.1 here), checks
    its MD5, and the unpacked folder is read; without --download nothing is fetched."""
    written = cifar10_archive
    dir_data = tmp_path / "data"
    with pytest.raises(DataError, match="add --download"):
        build_train_set(data_args(data_train="CIFAR10", dir_data=str(dir_data)))
    assert not dir_data.exists()
    previous = os.umask(0o022)
    try:
        train = build_train_set(data_args(data_train="CIFAR10", dir_data=str(dir_data), download=True))
    finally:
        os.umask(previous)
    assert len(train) == 10 and train.labels.tolist() == sum((written[f"data_batch_{i}"][1]
                                                              for i in range(1, 6)), [])
    assert sorted(p.name for p in dir_data.iterdir()) == ["cifar-10-batches-py"]  # no staging left behind
    folder = dir_data / "cifar-10-batches-py"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755  # what the umask gives, as for any folder made here
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o644}


def test_download_refuses_an_archive_with_the_wrong_md5_and_writes_nothing(tmp_path, monkeypatch,
                                                                           cifar10_archive):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", "0" * 32)
    dir_data = tmp_path / "data"
    with pytest.raises(DataError, match="does not match its MD5"):
        build_train_set(data_args(data_train="CIFAR10", dir_data=str(dir_data), download=True))
    assert list(dir_data.iterdir()) == []


def test_download_leaves_an_existing_folder_as_it_is(tmp_path, cifar10_archive):
    """A folder already there (here a 3-image subset) is read, never re-fetched or overwritten."""
    dir_data = tmp_path / "data"
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    subset = write_cifar(dir_data, "cifar-10-batches-py", files, "labels", 3, 10, seed=7)
    before = {p.name: p.read_bytes() for p in (dir_data / "cifar-10-batches-py").iterdir()}
    train = build_train_set(data_args(data_train="CIFAR10", dir_data=str(dir_data), download=True))
    assert len(train) == 15 and train.labels.tolist()[:3] == subset["data_batch_1"][1]
    assert {p.name: p.read_bytes() for p in (dir_data / "cifar-10-batches-py").iterdir()} == before


def test_a_cifar_batch_carrying_code_is_refused_and_nothing_in_it_runs(tmp_path, code_payload):
    payload, marker = code_payload
    write_cifar(tmp_path, "cifar-10-batches-py", ["test_batch"], "labels", 2, 10)
    batch = cifar_batch(np.zeros((2, 3072), dtype=np.uint8), "labels", [0, 1])
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({**batch, "filenames": [payload, b"b.png"]}, f, protocol=2)
    with pytest.raises(DataError, match=r"test_batch is refused: it names (posix|os)\.system.*nothing in it "
                                        r"was run"):
        build_test_sets(data_args(data_test="CIFAR10", dir_data=str(tmp_path)))
    assert not marker.exists()


def test_a_cifar_batch_carrying_code_stops_the_command_line_with_exit_2(tmp_path, capsys, code_payload):
    from image_classification.main import main

    payload, marker = code_payload
    write_cifar(tmp_path, "cifar-10-batches-py", ["test_batch"], "labels", 2, 10)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump(payload, f, protocol=2)
    argv = ["--model", "ResNet", "--depth", "8", "--data_test", "CIFAR10", "--test_only", "--cpu",
            "--n_threads", "0", "--dir_data", str(tmp_path), "--dir_save", str(tmp_path / "experiment"),
            "--save", "refused", "--pretrained", str(tmp_path / "weights.pt")]
    from image_classification.model import build_model
    from image_classification.option import parse_args

    torch.save(build_model(parse_args(argv[:4])).state_dict(), tmp_path / "weights.pt")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test_batch is refused" in err[0]
    assert not marker.exists() and not (tmp_path / "experiment" / "refused").exists()


def python2_batch(data, labels):
    """The opcodes Python 2's cPickle (protocol 2, numpy 1) wrote for the original CIFAR batches: byte
    strings as BINSTRING (no ``_codecs``), the array rebuilt by ``numpy.core.multiarray._reconstruct``."""
    import struct

    def string(b):
        return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)

    def integer(n):
        return b"J" + struct.pack("<i", n)

    out = b"\x80\x02}(" + string(b"data") + b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
    out += integer(0) + b"\x85" + string(b"b") + b"\x87R("  # empty array, then its state:
    out += integer(1) + integer(data.shape[0]) + integer(data.shape[1]) + b"\x86"  # version, shape
    out += b"cnumpy\ndtype\n" + string(b"u1") + integer(0) + integer(1) + b"\x87R"  # dtype('u1') ...
    out += b"(" + integer(3) + string(b"|") + b"NNN" + integer(-1) + integer(-1) + integer(0) + b"tb"
    out += b"\x89" + string(data.tobytes()) + b"tb"  # not Fortran order, the pixels
    out += string(b"labels") + b"](" + b"".join(integer(v) for v in labels) + b"e"
    return out + string(b"batch_label") + string(b"testing batch 1 of 1") + b"u."


@pytest.mark.parametrize("variant", ["Python 2 cPickle", "protocol 2, numpy 2 names",
                                     "protocol 2, numpy 1 names", "protocol 5"])
def test_real_format_batches_load_under_numpy_1_and_2_names(tmp_path, variant):
    """Batches pickled as the originals were (Python 2, protocol 2, numpy 1), as Python 3 writes them at
    protocol 2 (numpy 1 wrote ``numpy.core.multiarray``, numpy 2 writes ``numpy._core.multiarray``) and
    as a newer writer would (protocol 5) all load."""
    data = np.random.default_rng(3).integers(0, 256, (3, 3072), dtype=np.uint8)
    blob = pickle.dumps(cifar_batch(data, "labels", [4, 0, 9]), protocol=5 if variant == "protocol 5" else 2)
    if variant == "protocol 2, numpy 1 names":
        assert b"numpy._core.multiarray" in blob
        blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    if variant == "Python 2 cPickle":
        blob = python2_batch(data, [4, 0, 9])
    write_cifar(tmp_path, "cifar-10-batches-py", [], "labels", 0, 10)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(blob)
    test = build_test_sets(data_args(data_test="CIFAR10", dir_data=str(tmp_path)))["CIFAR10"]
    assert torch.equal(test.images, torch.as_tensor(data).view(3, 3, 32, 32))
    assert test.labels.tolist() == [4, 0, 9]


def test_missing_cifar_file_is_named(tmp_path):
    write_cifar(tmp_path, "cifar-10-batches-py", ["data_batch_1", "test_batch"], "labels", 2, 10)
    with pytest.raises(DataError, match="data_batch_2"):
        build_train_set(data_args(data_train="CIFAR10", dir_data=str(tmp_path)))


def test_corrupt_cifar_file_is_a_data_error(tmp_path):
    write_cifar(tmp_path, "cifar-10-batches-py", ["test_batch"], "labels", 2, 10)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="test_batch"):
        build_test_sets(data_args(data_test="CIFAR10", dir_data=str(tmp_path)))


def write_imagenet(root, split="val", sizes=((260, 300), (300, 256))):
    """A tiny ImageFolder tree ``root/ILSVRC2012/<split>/<wnid>/x.JPEG``, one image per class."""
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    for label, (h, w) in enumerate(sizes):
        folder = root / "ILSVRC2012" / split / f"n0000000{label}"
        folder.mkdir(parents=True)
        iio.imwrite(folder / "x.JPEG", rng.integers(0, 256, (h, w, 3), dtype=np.uint8), extension=".jpeg")


def test_imagenet_folder_is_read_at_224(tmp_path):
    write_imagenet(tmp_path)
    test = build_test_sets(data_args(data_test="ImageNet", dir_data=str(tmp_path)))["ImageNet"]
    assert [test[i][0].shape for i in range(2)] == [(3, 224, 224)] * 2
    assert [test[i][1] for i in range(2)] == [0, 1]
    with pytest.raises(DataError, match="ILSVRC2012"):
        build_train_set(data_args(data_train="ImageNet", dir_data=str(tmp_path)))


@pytest.mark.usefixtures("one_thread")
def test_imagenet_five_and_ten_crops(tmp_path):
    """--crop 5: corners and centre of the 256-resized image (the centre is the --crop 1 image);
    --crop 10: those five, then the same crops of the mirrored image."""
    write_imagenet(tmp_path)
    sets = {crop: build_test_sets(data_args(data_test="ImageNet", dir_data=str(tmp_path), crop=crop))
            ["ImageNet"] for crop in (1, 5, 10)}
    for i in range(2):
        one, five, ten = (sets[c][i][0] for c in (1, 5, 10))
        assert five.shape == (5, 3, 224, 224) and ten.shape == (10, 3, 224, 224)
        assert torch.equal(five[4], one) and torch.equal(ten[:5], five)
        for j, mirrored in enumerate((1, 0, 3, 2)):  # left and right corners swap in the mirror image
            assert torch.equal(ten[5 + j], five[mirrored].flip(-1))
        # the mirrored centre: exact, or one pixel off where the margin (width - 224) is odd
        assert any(torch.equal(ten[9][..., 1:-1], five[4].flip(-1)[..., a:223 + a - 1]) for a in (0, 1, 2))
        assert not torch.equal(five[0], five[3])  # different places of the image
    assert [sets[10][i][1] for i in range(2)] == [0, 1]


# ---------------------------------------------------------------------------- subsets and names
def test_n_train_and_n_test_take_the_first_samples():
    full = build_train_set(data_args())
    train = build_train_set(data_args(n_train=30, n_test=7))
    test = build_test_sets(data_args(n_train=30, n_test=7))["Synthetic"]
    assert len(train) == 30 and len(test) == 7
    assert [train[i][1] for i in range(30)] == full.labels[:30].tolist()


@pytest.mark.parametrize("n", [-1, 1001])
def test_bad_subset_sizes_are_option_errors(n):
    with pytest.raises(OptionError, match="--n_train"):
        build_train_set(data_args(n_train=n))


def test_several_test_sets_and_unknown_names():
    assert list(build_test_sets(data_args(data_test="Synthetic+Synthetic"))) == ["Synthetic"]
    with pytest.raises(UserError, match="CIFAR10"):
        build_train_set(data_args(data_train="MNIST"))


# ---------------------------------------------------------------------------- losses
def test_loss_types():
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 10), torch.tensor([0, 3, 9, 3, 1])
    args = argparse.Namespace()
    assert torch.allclose(LOSS_TYPES.get("CE")(args)(logits, labels), F.cross_entropy(logits, labels))
    assert torch.allclose(LOSS_TYPES.get("NLL")(args)(logits, labels), -logits[range(5), labels].mean())
    one_hot = torch.zeros(5, 10)
    one_hot[range(5), labels] = 1
    assert torch.allclose(LOSS_TYPES.get("MSE")(args)(logits, labels), ((logits - one_hot) ** 2).mean())
    assert sorted(LOSS_TYPES.names()) == ["CE", "MSE", "NLL"]
    with pytest.raises(UserError, match="L1"):
        LOSS_TYPES.get("L1")
