"""CPU-CI stub of torchvision (the PyPI wheel for torch 2.13 is a CUDA build that cannot load here)."""

import sys

import cpu_import_stub

cpu_import_stub.install(sys.modules[__name__])
