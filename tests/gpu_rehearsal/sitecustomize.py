"""The GPU window's rehearsal on this machine (tests/test_gpu_window.py): the packages the device's
image lacks are hidden from every process started with this folder on PYTHONPATH, except where
bench/gpu.sh unpacked the carried wheels (ARTDATE_REHEARSAL_SITE). So a stage that needs a package
the window does not carry fails here as it would there."""

import importlib.abc
import importlib.machinery
import os
import sys

HIDDEN = set(filter(None, os.environ.get("ARTDATE_REHEARSAL_HIDDEN", "").split(",")))
SITE = os.environ.get("ARTDATE_REHEARSAL_SITE", "")


class OnlyFromTheCarriedWheels(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in HIDDEN or "." in name:  # a submodule follows its package
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, [SITE]) if SITE else None
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: the GPU window does not carry it)", name=name)
        return spec


if HIDDEN:
    sys.meta_path.insert(0, OnlyFromTheCarriedWheels())
