"""r2fs: an object store built the way Cloudflare R2 is, usable as a folder.

The Python API lives in `r2fs.engine.store` (re-exported here)."""

from .engine.errors import *  # noqa: F401,F403
from .engine.store import Bucket, Cluster, ObjectBody  # noqa: F401
from .engine.types import Conditional, ObjectInfo, ObjectList, Range  # noqa: F401

__version__ = "0.1.0"
