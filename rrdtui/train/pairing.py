"""Does a method work with this student and teacher? Checked before any run row is written.

`python -m rrdtui.train.pairing` reads a resolved configuration (JSON) on stdin, builds the student
and the teacher architectures with random weights, and builds the method exactly as training will
(its connectors sized from the networks' stage maps), then exits 0, or prints the method's one-line
MethodError on stderr and exits 2. The CLI and the dashboard run it as a process (they never import
torch), for methods that read stage maps: their pairings are the ones that can be impossible.
"""

from __future__ import annotations

import json
import sys

import torch

from rrdtui.config import ConfigError, from_mapping
from rrdtui.registry import method_info
from rrdtui.train.methods.base import Context, MethodError, build_method
from rrdtui.train.models import build_model

# The input size of the data sets whose images have a fixed size (others use data.image_size).
FIXED_IMAGE_SIZE = {"cifar10": 32, "cifar100": 32, "fashion_mnist": 28, "stl10": 96, "tiny_imagenet": 64}


def check(raw: dict, num_classes: int, in_channels: int) -> None:
    """Build cfg's method on its two networks; raises MethodError (or ConfigError) with one line."""
    cfg = from_mapping(raw, "the run")
    image_size = FIXED_IMAGE_SIZE.get(cfg.data.name, cfg.data.image_size)
    student = build_model(cfg.student.arch, num_classes, in_channels=in_channels)
    teacher = build_model(cfg.teacher.arch, num_classes, in_channels=in_channels)
    n = max(cfg.method.queue_size, 2 * num_classes, cfg.train.batch_size)  # labels, balanced
    build_method(
        Context(
            cfg=cfg.method,
            info=method_info(cfg.method.name),
            student=student,
            teacher=teacher,
            train_labels=torch.arange(n) % num_classes,
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            epochs=cfg.train.epochs,
            steps_per_epoch=max(1, n // cfg.train.batch_size),
            batch_size=cfg.train.batch_size,
            generator=torch.Generator().manual_seed(0),
        )
    )


def main() -> int:
    request = json.load(sys.stdin)
    try:
        check(request["config"], request["num_classes"], request["in_channels"])
    except (MethodError, ConfigError) as exc:
        print(f"method {request['config']['method']['name']}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
