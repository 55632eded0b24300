"""The hot paths under performance watch, each with a reference operation of the same shape.

A *case* builds its inputs once and returns two callables: ``hot`` runs
gradfree's code, ``ref`` a plain torch operation doing the same core work
(the projection's matmul, the ridge's Gram + eigendecomposition, the
backbone's bare forward, a bare SGD step). On a shared, noisy machine both
slow down together, so their ratio is far steadier than either time: the
ratio gate (``test_ratio_gate.py``) compares it with the one stored in
``baseline.json``. Sizes are chosen for ~0.05-0.3 s per call on 2 CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Case = tuple[Callable[[], object], Callable[[], object]]
#: torch threads while timing (conftest.py): on a busy machine multi-threaded timings swing by 10x.
THREADS = 1


def projection() -> Case:
    """Gaussian |XR|^2 of binary features (R regenerated from the seed) vs the bare complex matmul."""
    from projector.projections import GaussianProjection

    g = torch.Generator().manual_seed(0)
    X = (torch.rand(512, 2048, generator=g) > 0.5).to(torch.uint8)
    proj = GaussianProjection(n_components=1024, seed=0).fit(X)
    Xf = X.float()
    R = torch.randn(2048, 2 * 1024, generator=g)

    def ref():
        P = Xf @ R
        return P[:, :1024].square() + P[:, 1024:].square()

    return (lambda: proj.transform(X)), ref


def ridge() -> Case:
    """Ridge with its 13-alpha validation sweep and refit vs one Gram + its eigendecomposition."""
    from projector.ridge import RidgeClassifier

    g = torch.Generator().manual_seed(0)
    Z = torch.randn(800, 1024, generator=g)
    y = torch.randint(0, 10, (800,), generator=g)
    Zv = torch.randn(200, 1024, generator=g)
    yv = torch.randint(0, 10, (200,), generator=g)

    def ref():
        Zc = Z - Z.mean(0)
        return torch.linalg.eigh((Zc @ Zc.T).double())

    return (lambda: RidgeClassifier().fit(Z, y, X_val=Zv, y_val=yv)), ref


def extraction() -> Case:
    """extract_features (uint8 -> normalised float -> cut MobileNetV2 -> flat) vs torchvision's bare forward."""
    from benchmarks.core.backbones import build_backbone, extract_features
    from benchmarks.core.data import IMAGENET_MEAN, IMAGENET_STD, to_float

    ext = build_backbone("mobilenet_v2", "features.18", weights="none")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 64, 64), generator=g, dtype=torch.uint8)
    x = to_float(images, IMAGENET_MEAN, IMAGENET_STD)
    # An independent plain torchvision network, so a slower Extractor is not hidden in the reference too.
    import torchvision

    plain = torchvision.models.mobilenet_v2(weights=None).features.eval()

    def ref():
        with torch.inference_mode():
            return plain(x).flatten(1)

    return (lambda: extract_features(ext, images, IMAGENET_MEAN, IMAGENET_STD, batch_size=32)), ref


def training_step() -> Case:
    """Two steps of the baselines' training loop on SmallCNNNet (augmentation on) vs two bare SGD steps of
    the same layers in a plain nn.Sequential."""
    from baselines import _training
    from baselines.small_cnn import SmallCNNNet
    from benchmarks.core.data import ImageSplit, to_float

    torch.manual_seed(0)
    model = SmallCNNNet(10, width=16, depth=2)
    g = torch.Generator().manual_seed(0)
    split = ImageSplit(torch.randint(0, 256, (128, 3, 32, 32), generator=g, dtype=torch.uint8),
                       torch.randint(0, 10, (128,), generator=g))
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    feed = _training.Feed(mean=mean, std=std, device=torch.device("cpu"), batch_size=64, pad_px=4, flip=True)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = to_float(split.images, mean, std)
    # The same layers written out plainly: a slower SmallCNNNet is not hidden in the reference.
    plain = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(32 * 16, 120), torch.nn.ReLU(),
        torch.nn.Linear(120, 84), torch.nn.ReLU(), torch.nn.Linear(84, 10))
    plain_opt = torch.optim.SGD(plain.parameters(), lr=1e-3, momentum=0.9)

    def hot():
        return _training.train_epoch(model, split, opt, loss_fn, feed, torch.Generator().manual_seed(0))

    def ref():
        for i in (0, 64):
            loss = loss_fn(plain(x[i:i + 64]), split.labels[i:i + 64])
            plain_opt.zero_grad(set_to_none=True)
            loss.backward()
            plain_opt.step()

    return hot, ref


CASES = {"projection": projection, "ridge": ridge, "extraction": extraction, "training_step": training_step}
