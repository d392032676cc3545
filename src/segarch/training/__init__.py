"""Training and fine-tuning of zoo architectures on annotated images (no GUI).

Modules: :mod:`~segarch.training.data` (lazy image/label sources, partial annotations, splits),
:mod:`~segarch.training.transforms` (MONAI crops and augmentation), :mod:`~segarch.training.sampler`
(batches), :mod:`~segarch.training.losses`, :mod:`~segarch.training.metrics`,
:mod:`~segarch.training.finetune` (changing the class count), :mod:`~segarch.training.log` (CSV and
PNG) and :mod:`~segarch.training.loop` (:func:`train`, :func:`train_iter`).
"""

from segarch.training.loop import TRAINABLE_TASKS, TrainEvent, log_paths, resolve_device, train, train_iter

__all__ = ["TrainEvent", "train", "train_iter", "resolve_device", "log_paths", "TRAINABLE_TASKS"]
