"""r2fs's own implementation of the FUSE kernel protocol (no libfuse).

`proto` is the wire format, `mounting` gets a /dev/fuse descriptor mounted,
`session` reads requests and writes replies, `api` is what filesystems see.
The filesystem (r2fs/fuse/ops.py) knows nothing of the wire.
"""
