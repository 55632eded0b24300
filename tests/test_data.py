import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.data import DEBIAN_FASHION_MNIST, DatasetError, load_dataset, to_float


def _make_folder(root, classes=("cat", "dog"), n=10, size=12, mode="RGB"):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            arr = np.full((size, size, 3), 40 * c + i, dtype=np.uint8)
            Image.fromarray(arr).convert(mode).save(root / name / f"{i:03d}.png")
    return root


def test_imagefolder_split_by_sorted_name(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    b = load_dataset(f"imagefolder:{root}", image_size=16, val_fraction=0.25, progress=False)
    assert b.classes == ["cat", "dog"]
    # 80/20 per class by sorted file name: 8 train (2 of them validation), 2 test
    assert (len(b.train), len(b.val), len(b.test)) == (12, 4, 4)
    assert b.train.images.dtype == torch.uint8 and b.train.images.shape[1:] == (3, 16, 16)
    # the test images are the last two files of each class (values 8, 9 and 48, 49 before resizing)
    assert sorted(b.test.images[:, 0, 0, 0].tolist()) == [8, 9, 48, 49]


def test_stratified_subsets_are_deterministic_and_disjoint(cifar10_dir):
    kw = dict(image_size=32, train_per_class=10, test_per_class=4, progress=False)
    a = load_dataset("cifar10", cifar10_dir, **kw)
    b = load_dataset("cifar10", cifar10_dir, **kw)
    assert a.fingerprint() == b.fingerprint()
    assert torch.bincount(a.train.labels).tolist() == [8] * 10
    assert torch.bincount(a.val.labels).tolist() == [2] * 10
    assert torch.bincount(a.test.labels).tolist() == [4] * 10
    # validation images are not training images
    tr = {bytes(x.numpy()) for x in a.train.images}
    assert not any(bytes(x.numpy()) in tr for x in a.val.images)
    c = load_dataset("cifar10", cifar10_dir, data_seed=1, **kw)
    assert c.fingerprint() != a.fingerprint()


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.exists(), reason="Debian's dataset-fashion-mnist not installed")
def test_fashion_mnist_grey_to_rgb():
    b = load_dataset("fashion-mnist", image_size=32, train_per_class=3, test_per_class=2, val_fraction=1 / 3,
                     progress=False)
    assert len(b.classes) == 10 and len(b.test) == 20
    x = b.train.images
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])


def test_to_float_normalises():
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    y = to_float(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert torch.allclose(y, torch.ones_like(y))


def test_missing_folder_names_it(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "nope")):
        load_dataset("cifar10", tmp_path / "nope")


def test_malformed_folder_explains_layout(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="train/<class>"):
        load_dataset("cifar10", tmp_path)


def test_non_image_file_is_named(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    (root / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match="notes.txt"):
        load_dataset(f"imagefolder:{root}", progress=False)


def test_corrupt_image_is_named(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DatasetError, match="broken.jpg"):
        load_dataset(f"imagefolder:{root}", image_size=8, progress=False)


def test_too_many_per_class(tmp_path):
    root = _make_folder(tmp_path / "imgs", n=5)
    with pytest.raises(DatasetError, match="--train-per-class"):
        load_dataset(f"imagefolder:{root}", train_per_class=50, progress=False)


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="choose one of"):
        load_dataset("imagenet-22k")


def test_offline_download_failure_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADFREE_DATA", str(tmp_path))
    import torchvision.datasets.utils as U

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(U, "download_url", offline)
    monkeypatch.setattr(U, "download_and_extract_archive", offline)
    import torchvision.datasets.cifar as C

    monkeypatch.setattr(C, "download_and_extract_archive", offline)
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("cifar10")
