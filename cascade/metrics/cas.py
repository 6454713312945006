"""The Classification Accuracy Score protocol (Ravuri & Vinyals 2019; CDM table 2), shared by
eval/cas.py and eval/bench_base.py: a small ResNet (cascade/models/classifier.py) trained on one labelled
set (the samples, or real images for the upper bound) from the same initial weights and schedule,
scored top-1 and top-5 on real held-out images."""

from __future__ import annotations

import torch

from ..models.classifier import ResNetClassifier, predict_logits, top_k_accuracy, train_classifier


def classification_accuracy(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                            num_classes: int, resolution: int, *, width: int = 32, epochs: int = 30,
                            batch_size: int = 64, seed: int = 0, device="cpu", class_names=None,
                            desc: str = "classifier") -> tuple[ResNetClassifier, dict]:
    """(the trained classifier, {"train_images", "top1", "top5"}) for uint8 (images, labels) pairs.
    The initial weights come from `seed`, so every set trains from the same ones."""
    torch.manual_seed(seed)
    model = ResNetClassifier(num_classes, width=width, resolution=resolution, class_names=class_names).to(device)
    train_classifier(model, *train, epochs=epochs, batch_size=batch_size, seed=seed, desc=desc)
    logits = predict_logits(model, test[0])
    return model, {"train_images": len(train[0]), "top1": top_k_accuracy(logits, test[1], 1),
                   "top5": top_k_accuracy(logits, test[1], 5)}
