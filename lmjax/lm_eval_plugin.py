"""Makes `lm_eval --model lmjax` work from lm-eval's own command line.

lm-eval 0.4 finds models only in its registry and has no plugin discovery, so installing lmjax
from a wheel puts `lmjax-lm-eval.pth` in site-packages; at start-up it calls install(), which
waits for lm_eval.api.registry to be imported and then registers `lmjax` there lazily (the
backend, with JAX, loads only when a run asks for it). Other programs pay one cheap import hook.
Editable installs (pip install -e) do not copy the file; write it with

  python -m lmjax.lm_eval_plugin
"""
import importlib.abc
import importlib.util
import os
import sys
import sysconfig

MODEL_NAME = "lmjax"
BACKEND = "lmjax.infer.lm_eval_backend:LmjaxLM"
REGISTRY_MODULE = "lm_eval.api.registry"
PTH_FILE = "lmjax-lm-eval.pth"
PTH_LINE = ("import sys; exec('try:\\n from lmjax import lm_eval_plugin\\n lm_eval_plugin.install()"
            "\\nexcept ImportError:\\n pass')\n")


def register(registry) -> None:
    if MODEL_NAME not in registry.model_registry:
        registry.model_registry.register(MODEL_NAME, target=BACKEND)


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        register(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != REGISTRY_MODULE:
            return None
        sys.meta_path.remove(self)  # once found, the normal finders take it from here
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


def install() -> None:
    """Registers `lmjax` with lm-eval now if its registry is loaded, else when it is."""
    if REGISTRY_MODULE in sys.modules:
        register(sys.modules[REGISTRY_MODULE])
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def main():
    path = os.path.join(sysconfig.get_paths()["purelib"], PTH_FILE)
    with open(path, "w") as f:
        f.write(PTH_LINE)
    print(f"wrote {path}: `lm_eval --model lmjax` now works in this environment")


if __name__ == "__main__":
    main()
