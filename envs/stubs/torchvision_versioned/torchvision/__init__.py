"""CPU-CI stub of torchvision that declares a version (for SGLang releases on transformers 5.x).

transformers 5.x finds a package by ``importlib.util.find_spec`` alone, so it sees this stub as an
installed torchvision, then parses its version at import (``is_torchvision_greater_or_equal``
in ``image_processing_auto``): without a PEP 440 ``__version__`` that raises ``InvalidVersion:
'N/A'``. The declared version is the lowest there is, so every "torchvision >= x" check takes the
old-torchvision path; anything actually called still raises (see ``cpu_import_stub``).
transformers 4.x reads the distribution metadata instead (there is none), so it still sees no
torchvision, exactly as with the plain ``torchvision`` stub.
"""

import sys

import cpu_import_stub

__version__ = "0.0.0+cpu.stub"

cpu_import_stub.install(sys.modules[__name__])
