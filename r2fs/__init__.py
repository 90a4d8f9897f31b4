"""r2fs: an object store built the way Cloudflare R2 is, usable as a folder.

The Python API lives in `r2fs.engine.store` (re-exported here). The names are
loaded on first use (PEP 562), so that `import r2fs.cli` -- every `r2fs`
command's start -- does not pay for the whole engine before it knows which
command runs.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: name -> module it comes from (every error class comes from r2fs.engine.errors)
_API = {"Bucket": "store", "Cluster": "store", "ObjectBody": "store",
        "Conditional": "types", "ObjectInfo": "types", "ObjectList": "types", "Range": "types"}


def __getattr__(name: str) -> object:
    import importlib

    module = _API.get(name)
    if module is None:
        errors = importlib.import_module(".engine.errors", __name__)
        if not name.startswith("_") and hasattr(errors, name):
            return getattr(errors, name)
        raise AttributeError(f"module 'r2fs' has no attribute {name!r}")
    return getattr(importlib.import_module(f".engine.{module}", __name__), name)


def __dir__() -> list[str]:
    from .engine import errors
    return sorted({*globals(), *_API, *(n for n in vars(errors) if not n.startswith("_"))})
