"""Training and fine-tuning of zoo architectures on annotated images (no GUI).

:func:`train` and :func:`train_iter` (:mod:`~segarch.training.loop`) run one loop for every kind of model,
with its options in one :class:`TrainConfig` (:mod:`~segarch.training.config`). What a kind of training
reads, draws and measures is its task (:mod:`~segarch.training.task`): :mod:`~segarch.training.semantic`
(patches, classes per pixel) and :mod:`~segarch.training.interactive` (extreme-point models, one example
per object; also :func:`fine_tune` and :func:`training_pairs`) and :mod:`~segarch.training.instance` (instance
models: a decoder's targets made from instance labels, validated by matched objects).

Their parts: :mod:`~segarch.training.start` (the model to start from), :mod:`~segarch.training.data`
(lazy image/label sources, partial annotations, splits), :mod:`~segarch.training.normalisation` (frozen
percentiles), :mod:`~segarch.training.transforms` (MONAI crops and augmentation),
:mod:`~segarch.training.sampler` (patch batches), :mod:`~segarch.training.objects` (object examples),
:mod:`~segarch.training.losses`, :mod:`~segarch.training.metrics`, :mod:`~segarch.training.finetune`
(changing the class count) and :mod:`~segarch.training.log` (CSV and PNG).
"""

from segarch.training.config import TrainConfig
from segarch.training.loop import TrainEvent, log_paths, resolve_device, train, train_iter
from segarch.training.task import TrainingTask, Validation, register_task, task_names, trainable_tasks

# The tasks register themselves when imported: a new task is a new module, imported here.
from segarch.training.semantic import SemanticTask
from segarch.training.interactive import ExtremePointTask, fine_tune, training_pairs, with_corrections
from segarch.training.instance import InstanceTask
from segarch.training.detection import DetectionTask
from segarch.training.panoptic import PanopticTask

#: The zoo tasks whose architectures train here: semantic (patches) and interactive (extreme-point objects).
TRAINABLE_TASKS = trainable_tasks()

__all__ = ["TrainConfig", "TrainEvent", "train", "train_iter", "resolve_device", "log_paths", "TRAINABLE_TASKS",
           "TrainingTask", "Validation", "register_task", "task_names", "SemanticTask", "ExtremePointTask",
           "InstanceTask", "DetectionTask", "PanopticTask",
           "fine_tune", "training_pairs", "with_corrections"]
