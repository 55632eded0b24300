"""Backprop baselines, each a method of the benchmark (see benchmarks.harness.registry).

* ``finetune`` (:class:`baselines.finetune.FineTune`): the pretrained backbone at
  the cell's cut with a new linear head, as a linear probe or with its last
  blocks unfrozen;
* ``wrn22`` (:class:`baselines.wrn22.WRN22OneCycle`): fastai's one-cycle
  WideResNet-22 (DAWNBench recipe), trained by a real fastai ``Learner``;
* ``small_cnn`` (:class:`baselines.small_cnn.SmallCNN`): a small CNN from scratch
  in the style of the PyTorch CIFAR-10 tutorial.

``baselines._training`` holds the shared loop (warm-up, epochs on the
runner's clock, best epoch on validation); ``baselines._divergence`` what
stops a training whose loss or weights are no longer finite. Nothing here imports fastai:
``baselines.wrn22`` imports it when it runs.
"""
