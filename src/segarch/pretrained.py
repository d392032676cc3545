"""``segarch.pretrained`` is :mod:`segarch.models.pretrained`, the models that ship trained, under the name the
README has always used: ``segarch.pretrained.load("unet.nuclei2d")``."""

import sys

from segarch.models import pretrained

sys.modules[__name__] = pretrained  # one module, two names: what is set on one is seen through the other
