"""Import-time stand-ins for CUDA-only packages (sgl_kernel, vllm, torchvision) on CPU CI.

SGLang imports these at module level even on a CPU machine, but only binds names from them:
nothing is called during import. A stub module answers any attribute with a placeholder that
raises ``NotImplementedError`` when called (so a test can never pass by accident through a
stub), and creates submodules on demand, optionally only an allow-list of them: any other
submodule stays missing, so SGLang's ``try: import vllm.x except ImportError`` still sees
"absent". These directories go on PYTHONPATH (not sys.path in conftest) because SGLang's
spawned children re-import them.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types


class CpuStubCalled(NotImplementedError):
    pass


class Placeholder:
    def __init__(self, qualname: str) -> None:
        self._qualname = qualname

    def __call__(self, *args: object, **kwargs: object) -> object:
        raise CpuStubCalled(f"{self._qualname} is a CPU-CI import stub and cannot be called")

    def __getattr__(self, name: str) -> "Placeholder":
        if name.startswith("__"):
            raise AttributeError(name)
        return Placeholder(f"{self._qualname}.{name}")

    def __repr__(self) -> str:
        return f"<cpu stub {self._qualname}>"


class StubModule(types.ModuleType):
    __cpu_stub__ = True

    def __getattr__(self, name: str) -> Placeholder:
        if name.startswith("__"):
            raise AttributeError(name)
        return Placeholder(f"{self.__name__}.{name}")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self) -> None:
        self.roots: dict[str, frozenset[str] | None] = {}

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        root = fullname.partition(".")[0]
        if root not in self.roots or fullname == root:
            return None
        allowed = self.roots[root]
        if allowed is not None and not any(a == fullname or a.startswith(fullname + ".") for a in allowed):
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        module = StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):  # type: ignore[no-untyped-def]
        return None


_FINDER = _StubFinder()
sys.meta_path.append(_FINDER)


def install(module: types.ModuleType, submodules: list[str] | None = None) -> None:
    """Turn ``module`` (a stub package's ``__init__``) into a stub; ``submodules`` restricts
    which dotted submodules exist (None: all)."""
    _FINDER.roots[module.__name__] = frozenset(submodules) if submodules is not None else None
    module.__class__ = StubModule
