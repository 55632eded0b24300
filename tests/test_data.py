import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.core.data import DEBIAN_FASHION_MNIST, DatasetError, load_dataset, to_float


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


def test_too_many_per_class_names_the_class(tmp_path):
    root = _make_folder(tmp_path / "imgs", n=5)
    with pytest.raises(DatasetError, match=r"training images of class 'cat' but it has only 4.*--train-per-class"):
        load_dataset(f"imagefolder:{root}", train_per_class=50, clamp_per_class=False, progress=False)


def test_named_dataset_short_of_images_names_the_class(cifar10_dir):
    with pytest.raises(DatasetError, match=r"test images of class 'airplane' but it has only 1000.*--test-per-class"):
        load_dataset("cifar10", cifar10_dir, image_size=8, train_per_class=5, test_per_class=1001, progress=False)


def test_small_user_folder_works_with_the_default_sizes(tmp_path, capsys):
    """100 images per class, the defaults asking for 500 / 200: every image is used, one notice."""
    root = tmp_path / "imgs"
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(100 if name == "cat" else 30):
            Image.new("RGB", (4, 4), (c * 100, i, 0)).save(root / name / f"{i:03d}.png")
    kw = dict(image_size=4, train_per_class=500, test_per_class=200, val_fraction=0.2, progress=False)
    b = load_dataset(f"imagefolder:{root}", **kw)
    # 80/20 split by name: cat 80 train (16 of them validation) / 20 test, dog 24 (5) / 6
    assert torch.bincount(b.train.labels).tolist() == [64, 19]
    assert torch.bincount(b.val.labels).tolist() == [16, 5]
    assert torch.bincount(b.test.labels).tolist() == [20, 6]
    err = capsys.readouterr().err
    assert "'cat' (80)" in err and "'dog' (24)" in err and "'cat' (20)" in err and "500" in err and "200" in err
    assert b.info["clamped_classes"] == {"train": ["'cat' (80)", "'dog' (24)"], "test": ["'cat' (20)", "'dog' (6)"]}
    again = load_dataset(f"imagefolder:{root}", **kw)
    assert capsys.readouterr().err == ""  # the notice is printed once
    assert again.fingerprint() == b.fingerprint()
    capped = load_dataset(f"imagefolder:{root}", image_size=4, train_per_class=10, test_per_class=3, progress=False)
    assert torch.bincount(capped.train.labels).tolist() == [8, 8]  # enough images: exactly as asked
    assert torch.bincount(capped.test.labels).tolist() == [3, 3] and capsys.readouterr().err == ""


def test_val_fraction_zero_gives_an_empty_validation_split(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    b = load_dataset(f"imagefolder:{root}", image_size=8, val_fraction=0.0, progress=False)
    assert (len(b.train), len(b.val), len(b.test)) == (16, 0, 4)
    described = b.describe()
    assert described["n_val"] == 0 and len(described["data_fingerprint"]) == 12
    other = load_dataset(f"imagefolder:{root}", image_size=8, val_fraction=0.25, progress=False)
    assert other.fingerprint() != b.fingerprint()


@pytest.mark.parametrize("kw, option", [
    (dict(val_fraction=1.0), "--val-fraction"),
    (dict(val_fraction=-0.1), "--val-fraction"),
    (dict(val_fraction=1.5), "--val-fraction"),
    (dict(train_per_class=-9), "--train-per-class"),
    (dict(test_per_class=-9), "--test-per-class"),
    (dict(test_per_class=0), "--test-per-class"),
    (dict(train_per_class=2.5), "--train-per-class"),
])
def test_out_of_range_sizes_are_a_clear_error(tmp_path, kw, option):
    root = _make_folder(tmp_path / "imgs")
    with pytest.raises(DatasetError, match=option):
        load_dataset(f"imagefolder:{root}", image_size=8, progress=False, **kw)


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


# --- decoding every image mode through the imagefolder loader: real files written by PIL ---


def _png16_rgb(path, rgb16):
    """A 16-bit-per-channel RGB PNG (PIL cannot write one): signature, IHDR, IDAT, IEND."""
    arr = np.broadcast_to(np.asarray(rgb16, dtype=">u2"), (4, 4, 3))
    raw = b"".join(b"\x00" + row.tobytes() for row in arr)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16bit_grey_pngs_are_scaled_not_white(tmp_path):
    root = tmp_path / "imgs"
    levels = {"dark": [1000, 2000, 3000, 4000, 5000], "bright": [40000, 45000, 50000, 55000, 65535]}
    for name, values in levels.items():
        (root / name).mkdir(parents=True)
        for i, v in enumerate(values):
            Image.fromarray(np.full((8, 8), v, dtype=np.uint16)).save(root / name / f"{i}.png")
    assert Image.open(root / "dark" / "0.png").mode == "I;16"  # what PIL reads back: 16-bit grey
    b = load_dataset(f"imagefolder:{root}", image_size=8, val_fraction=0.25, progress=False)
    got = {}
    for split in (b.train, b.val, b.test):
        assert torch.equal(split.images[:, 0], split.images[:, 2])  # grey
        for x, y in zip(split.images, split.labels):
            assert int(x.min()) == int(x.max())  # uniform, as written
            got.setdefault(b.classes[int(y)], []).append(int(x[0, 0, 0]))
    for name, values in levels.items():
        assert sorted(got[name]) == [round(v * 255 / 65535) for v in values]


def test_16bit_ramp_keeps_its_gradient(tmp_path):
    root = tmp_path / "imgs"
    (root / "ramp").mkdir(parents=True)
    ramp = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))  # (4, 256)
    for i in range(5):
        Image.fromarray(ramp).save(root / "ramp" / f"{i}.png")
    b = load_dataset(f"imagefolder:{root}", image_size=256, val_fraction=0.0, progress=False)
    row = b.test.images[0, 0, 0].numpy().astype(int)  # resized 4 -> 256 rows, columns untouched
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0) and len(set(row)) > 250


def test_every_mode_decodes_to_its_colour(tmp_path):
    """16-bit big-endian TIFF, 32-bit integer TIFF, 16-bit PGM, 16-bit RGB PNG, float TIFF,
    grey + alpha, palette with a transparent colour, CMYK: each a uniform file of known colour."""
    root = tmp_path / "imgs"
    for split in ("train", "test"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", (4, 4), (9, 9, 9)).save(root / split / name / "zz_plain.png")
    a = root / "test" / "a"
    Image.frombytes("I;16B", (4, 4), np.full((4, 4), 32896, dtype=">u2").tobytes()).save(a / "01_i16b.tif")
    Image.fromarray(np.full((4, 4), 65535, dtype=np.int32)).save(a / "02_int32.tif")
    Image.fromarray(np.full((4, 4), 100, dtype=np.int32)).save(a / "03_int32_8bit_values.tif")
    Image.fromarray(np.full((4, 4), 16448, dtype=np.uint16)).save(a / "04_16bit.pgm")
    _png16_rgb(a / "05_rgb16.png", (65535, 32896, 2570))
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(a / "06_float.tif")
    la = np.zeros((4, 4, 2), dtype=np.uint8)
    la[..., 0], la[:2, :, 1] = 30, 255  # grey 30: top half opaque, bottom half transparent
    Image.fromarray(la, "LA").save(a / "07_la.png")
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([200, 0, 0, 0, 0, 200] + [0] * 762)
    pal.save(a / "08_palette.png", transparency=1)  # colour 1 (blue) is transparent
    Image.new("CMYK", (4, 4), (255, 0, 0, 0)).save(a / "09_cmyk.tif")  # pure cyan
    expected = [
        [(128, 128, 128)],  # 32896 / 257
        [(255, 255, 255)],  # 32-bit, beyond 8-bit values: as 16-bit
        [(100, 100, 100)],  # 32-bit with 8-bit values: as 8-bit
        [(64, 64, 64)],  # 16448 / 257
        [(255, 128, 10)],
        [(128, 128, 128)],  # 0.5 of [0, 1]
        [(30, 30, 30), (255, 255, 255)],  # opaque top, white (the background) bottom
        [(255, 255, 255)],  # transparent palette colour: the background, not blue
        [(0, 255, 255)],
        [(9, 9, 9)],
    ]
    modes = [Image.open(p).mode for p in sorted(a.iterdir())]
    assert modes == ["I;16B", "I", "I", "I", "RGB", "F", "LA", "P", "CMYK", "RGB"]
    b = load_dataset(f"imagefolder:{root}", image_size=4, val_fraction=0.0, progress=False)
    images = b.test.images[b.test.labels == 0]
    assert len(images) == len(expected)
    for img, colours, path in zip(images, expected, sorted(a.iterdir())):
        top, bottom = tuple(img[:, 0, 0].tolist()), tuple(img[:, -1, 0].tolist())
        assert (top, bottom) == (colours[0], colours[-1]), path.name
