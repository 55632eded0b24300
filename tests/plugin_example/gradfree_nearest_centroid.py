"""A gradfree method from outside gradfree: the nearest class centroid of a pretrained network's features."""
from dataclasses import dataclass

import torch

from benchmarks.core.backbones import build_backbone, extract_features


@dataclass(frozen=True)
class Config:
    shrink: float = 0.0  # pull each centroid this far toward the mean of all training features, in [0, 1)

    def __post_init__(self):
        if not 0.0 <= self.shrink < 1.0:
            raise ValueError(f"shrink must be in [0, 1), got {self.shrink}")


class NearestCentroid:
    name, Config, uses_backbone, is_backprop = "nearest-centroid", Config, True, False

    def __init__(self, config: Config):
        self.config = config

    @classmethod
    def flops(cls, config, shape) -> tuple[dict, dict]:
        return {}, {"feature_dim": None, "k": None}  # no cost model: a dry run estimates ~0 s

    @classmethod
    def memory_bytes(cls, config, shape) -> int:
        return shape.n_images * 3 * shape.image_size**2 * 5  # the images, and features of that order

    @classmethod
    def label(cls, config) -> str:
        return f"nearest centroid shrink={config.shrink:g}"

    def run(self, ctx) -> dict:
        net, d = build_backbone(ctx.backbone, ctx.cut, ctx.weights, ctx.precision, ctx.device), ctx.data

        def features(split):
            return extract_features(net, d.split(split).images, d.mean, d.std, device=ctx.device).float()

        with ctx.clock.phase("extract_s"):  # the runner owns the clock: a method declares its phases
            x = features("train")
        with ctx.clock.phase("fit_s"):
            y = d.train.labels.to(x.device)
            c = torch.stack([x[y == k].mean(0) for k in range(d.n_classes)])
            c = (1 - self.config.shrink) * c + self.config.shrink * x.mean(0)

        def predict(f):
            return torch.cdist(f, c).argmin(1).cpu()

        def accuracy(predicted, split):
            return float((predicted == d.split(split).labels).float().mean())

        with ctx.clock.phase("eval_s", counted=False):
            val = predict(features("val"))
        with ctx.clock.phase("predict_s", counted=False):  # the test split, scored once
            test = predict(features("test"))
        # test_pred: kept beside results.csv, so reports pair this method with others image by image
        return {"train_acc": accuracy(predict(x), "train"), "val_acc": accuracy(val, "val"),
                "test_acc": accuracy(test, "test"), "test_pred": test,
                "feature_dim": int(x.shape[1]), "model_bytes": c.numel() * 4}
