"""Reed-Solomon coding of sealed chunks into k data + m parity shard payloads.

The codec is pyeclib's bundled ISA-L Cauchy RS (`isa_l_rs_cauchy`): ~1.3 GB/s
and more, where the pure-Python `reedsolo` runs at well under 1 MB/s
(DESIGN.md, "Erasure coding choice").

Stripes: a chunk is coded as a sequence of stripes of `stripe_size` bytes
(the last one shorter), not in one call. Coding 4 MiB in one call measured
300-600 MB/s on this machine, 256 KiB stripes 3-4 GB/s: the cost of big calls
is fresh large allocations, not the maths.

Payload format of shard i (self-delimiting, no outside knowledge needed)::

    for each stripe:  fragment length (u32 little endian) | fragment i of that stripe

where a fragment is what pyeclib produced (its own 80-byte header included),
or, for m == 0 (no parity), the raw i-th piece of the stripe.

Decoding fast path: ISA-L Cauchy RS is systematic -- data fragment i carries
bytes [i*P, (i+1)*P) of the stripe after the library's fragment header, with
P = ceil(len(stripe)/k). When every data shard is present the stripe is
copied straight out of the fragments, with no codec call and no extra copy.
That layout is *checked* when the codec is opened (`_probe_layout`), and each
fragment's length is checked against it, so a different pyeclib build falls
back to the codec instead of returning wrong bytes.
"""

from __future__ import annotations

import ctypes
import glob
import os
import struct
from typing import Callable

from pyeclib.ec_iface import ECDriver, ECDriverError

from .errors import DataUnavailable, InvalidClusterConfig

Buffer = bytes | bytearray | memoryview

EC_TYPE = "isa_l_rs_cauchy"
#: codec ids recorded in shard headers
CODEC_SPLIT = 0  # m == 0: plain split, no parity
CODEC_ISA_L_RS_CAUCHY = 1

_LEN = struct.Struct("<I")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# --- liberasurecode called directly ------------------------------------------------------------

_EC_BACKEND_ISA_L_RS_CAUCHY = 7  # liberasurecode's ec_backend_id_t
_CHKSUM_NONE = 1  # ec_checksum_type_t; what pyeclib asks for by default


class DirectEncoder:
    """liberasurecode's encoder (the library pyeclib wraps) called through ctypes.

    Why: per 256 KiB stripe, pyeclib's `encode` needs a `bytes` copy of the
    stripe and returns every fragment as a fresh `bytes`, which the shard
    writer then copies again into an aligned buffer for O_DIRECT. Called
    directly, the library reads the stripe where it lies and each fragment is
    copied once, straight into the shard file's buffer -- 640 KiB of copies
    per 256 KiB stripe instead of 1,280 -- and no call holds the GIL.

    The fragments must be byte-identical to pyeclib's (they are the shard
    format, decoded by pyeclib): `open` encodes probe stripes both ways and
    returns None unless every byte matches, or when the library, the symbol
    or the backend cannot be had; callers then use pyeclib.
    """

    def __init__(self, lib: ctypes.CDLL, desc: int, k: int, m: int) -> None:
        self._lib, self._desc, self.k, self.m = lib, desc, k, m
        self._encode = lib.liberasurecode_encode
        self._cleanup = lib.liberasurecode_encode_cleanup

    @classmethod
    def open(cls, k: int, m: int, reference: ECDriver) -> "DirectEncoder | None":
        try:
            import pyeclib
            libdir = os.path.join(os.path.dirname(os.path.dirname(pyeclib.__file__)),
                                  "pyeclib.libs")
            found = sorted(glob.glob(os.path.join(libdir, "liberasurecode*.so*")))
            lib = ctypes.CDLL(found[0]) if found else ctypes.CDLL("liberasurecode.so.1")
            args = (ctypes.c_int * 64)()  # struct ec_args, zero-padded well past its end
            args[0], args[1], args[2], args[3] = k, m, 0, m  # k, m, w (default), hd
            args[14] = _CHKSUM_NONE  # ct, after the 32-byte union and the priv_args2 pointer
            lib.liberasurecode_instance_create.argtypes = [ctypes.c_int, ctypes.c_void_p]
            lib.liberasurecode_instance_create.restype = ctypes.c_int
            desc = lib.liberasurecode_instance_create(_EC_BACKEND_ISA_L_RS_CAUCHY,
                                                      ctypes.byref(args))
            if desc <= 0:
                return None
            ptrs = ctypes.POINTER(ctypes.c_void_p)
            lib.liberasurecode_encode.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64,
                                                  ctypes.POINTER(ptrs), ctypes.POINTER(ptrs),
                                                  ctypes.POINTER(ctypes.c_uint64)]
            lib.liberasurecode_encode.restype = ctypes.c_int
            lib.liberasurecode_encode_cleanup.argtypes = [ctypes.c_int, ptrs, ptrs]
            lib.liberasurecode_encode_cleanup.restype = ctypes.c_int
            enc = cls(lib, desc, k, m)
            for length in (1, 1000, 4099, 65536, 100_003, 256 * 1024):
                data = os.urandom(length)
                if enc.fragments(data) != reference.encode(data):
                    return None
            return enc
        except (OSError, AttributeError, IndexError, ECDriverError):
            return None

    def encode_at(self, address: int, length: int,
                  visit: Callable[[int, int, int], None]) -> None:
        """Encode `length` bytes at `address`; visit(index, fragment address, fragment length)
        for each of the k+m fragments, valid only during the call."""
        data = ctypes.POINTER(ctypes.c_void_p)()
        parity = ctypes.POINTER(ctypes.c_void_p)()
        flen = ctypes.c_uint64()
        rc = self._encode(self._desc, address, length, ctypes.byref(data), ctypes.byref(parity),
                          ctypes.byref(flen))
        if rc != 0:
            raise ECDriverError(f"liberasurecode_encode failed ({rc})")
        try:
            for i in range(self.k):
                visit(i, data[i], flen.value)
            for i in range(self.m):
                visit(self.k + i, parity[i], flen.value)
        finally:
            self._cleanup(self._desc, data, parity)

    def fragments(self, data: bytes) -> list[bytes]:
        """The fragments as bytes (the probe compares them with pyeclib's)."""
        out: list[bytes] = [b""] * (self.k + self.m)

        def keep(i: int, addr: int, n: int) -> None:
            out[i] = ctypes.string_at(addr, n)

        self.encode_at(ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0,
                       len(data), keep)
        return out


def _address_of(buf: Buffer) -> tuple[int, object]:
    """(address, keep-alive) of a contiguous buffer's first byte, without copying when possible."""
    view = memoryview(buf).cast("B")
    if not view.readonly:
        c = (ctypes.c_char * len(view)).from_buffer(view)
        return ctypes.addressof(c), c
    raw = view.obj if isinstance(view.obj, bytes) and len(view) == len(view.obj) else view.tobytes()
    return ctypes.cast(ctypes.c_char_p(raw), ctypes.c_void_p).value or 0, raw


class Erasure:
    """RS(k, m) over stripes. Thread-safe: it holds no per-call state."""

    def __init__(self, k: int, m: int, stripe_size: int = 256 * 1024) -> None:
        if k < 1:
            raise InvalidClusterConfig(f"k must be at least 1 (got {k})")
        if m < 0:
            raise InvalidClusterConfig(f"m must be at least 0 (got {m})")
        if stripe_size < k or stripe_size >= 1 << 31:
            raise InvalidClusterConfig(f"stripe size {stripe_size} is out of range for k={k}")
        self.k, self.m, self.stripe_size = k, m, stripe_size
        self._driver: ECDriver | None = None
        self._frag_lens: dict[int, int] = {}
        if m == 0:
            self.codec = CODEC_SPLIT
            self._frag_header: int | None = 0
        else:
            self.codec = CODEC_ISA_L_RS_CAUCHY
            try:
                self._driver = ECDriver(k=k, m=m, ec_type=EC_TYPE)
            except ECDriverError as e:
                raise InvalidClusterConfig(
                    f"erasure code RS(k={k}, m={m}) is not supported by {EC_TYPE}: {e}") from None
            self._frag_header = self._probe_layout()
        self.direct: DirectEncoder | None = None
        if self._driver is not None and os.environ.get("R2FS_EC_DIRECT", "1") != "0":
            self.direct = DirectEncoder.open(k, m, self._driver)

    @property
    def n(self) -> int:
        return self.k + self.m

    def _probe_layout(self) -> int | None:
        """The codec's fragment header size if the systematic layout holds, else None."""
        assert self._driver is not None
        for length in (1, 1000, 4099):
            data = os.urandom(length)
            frags = self._driver.encode(data)
            piece = _ceil_div(length, self.k)
            header = len(frags[0]) - piece
            if header < 0:
                return None
            for i in range(self.k):
                lo = min(i * piece, length)
                hi = min(lo + piece, length)
                if frags[i][header:header + hi - lo] != data[lo:hi]:
                    return None
        return header

    def stripe_lengths(self, data_len: int) -> list[int]:
        full, rest = divmod(data_len, self.stripe_size)
        return [self.stripe_size] * full + ([rest] if rest else [])

    # --- encode ------------------------------------------------------------------

    def encode_parts(self, data: Buffer) -> list[list[Buffer]]:
        """Per shard, the buffers whose concatenation is its payload.

        Lets the caller checksum and `writev` a shard without joining it first.
        Buffers may be views of `data`; use them before `data` changes.
        """
        view = memoryview(data).cast("B")
        parts: list[list[Buffer]] = [[] for _ in range(self.n)]
        off = 0
        for length in self.stripe_lengths(len(view)):
            stripe = view[off:off + length]
            off += length
            if self._driver is None:
                piece = _ceil_div(length, self.k)
                frags: list[Buffer] = [stripe[min(i * piece, length):min((i + 1) * piece, length)]
                                       for i in range(self.k)]
            else:
                # pyeclib needs real bytes: it refuses a memoryview on encode, and its
                # decode even aborts the process on one (measured with pyeclib 1.8)
                frags = self._driver.encode(stripe.tobytes())
            for i, frag in enumerate(frags):
                parts[i].append(_LEN.pack(len(frag)))
                parts[i].append(frag)
        return parts

    def encode_into(self, data: Buffer, alloc: Callable[[int], Buffer],
                    offset: int) -> list[tuple[Buffer, int]] | None:
        """Encode straight into one buffer per shard: [(buffer, payload length)].

        Each buffer comes from `alloc(offset + payload length)`; the payload
        (the same bytes `encode_parts` gives) starts at `offset`, leaving room
        for the caller's header. None when the direct encoder is not available
        (the caller uses `encode_parts`).
        """
        enc = self.direct
        if enc is None:
            return None
        lengths = self.stripe_lengths(len(data))
        flens = [self._fragment_len(n) for n in lengths]
        payload = sum(4 + f for f in flens)
        bufs = [alloc(offset + payload) for _ in range(self.n)]
        views = [memoryview(b).cast("B") for b in bufs]
        dests = [_address_of(v)[0] for v in views]
        base, keep = _address_of(data)
        pos = offset
        off = 0
        memmove = ctypes.memmove

        def place(i: int, addr: int, n: int) -> None:
            if n != flen:
                raise ECDriverError(f"fragment of {n} bytes, expected {flen}")
            memmove(dests[i] + pos + 4, addr, n)

        try:
            for length, flen in zip(lengths, flens):
                header = _LEN.pack(flen)
                for v in views:
                    v[pos:pos + 4] = header
                enc.encode_at(base + off, length, place)
                off += length
                pos += 4 + flen
        except BaseException:
            del views
            raise
        del keep
        return [(b, payload) for b in bufs]

    def _fragment_len(self, stripe_len: int) -> int:
        """Length of each fragment of a stripe: the codec's header + ceil(len/k), padded
        as the codec pads it (known from the probe: fixed header, 16-byte words)."""
        return self._frag_lens.get(stripe_len) or self._learn_fragment_len(stripe_len)

    def _learn_fragment_len(self, stripe_len: int) -> int:
        assert self._driver is not None
        n = len(self._driver.encode(b"\0" * stripe_len)[0])
        if len(self._frag_lens) < 64:
            self._frag_lens[stripe_len] = n
        return n

    def encode(self, data: Buffer) -> list[bytes]:
        """k+m shard payloads (index order)."""
        return [b"".join(p) for p in self.encode_parts(data)]

    # --- decode ------------------------------------------------------------------

    def _split(self, payload: Buffer, count: int) -> list[memoryview] | None:
        """The payload's per-stripe fragments, or None if its framing is broken."""
        view = memoryview(payload).cast("B")
        frags, off = [], 0
        for _ in range(count):
            if off + 4 > len(view):
                return None
            (flen,) = _LEN.unpack_from(view, off)
            off += 4
            if off + flen > len(view):
                return None
            frags.append(view[off:off + flen])
            off += flen
        return frags if off == len(view) else None

    def decode(self, payloads: dict[int, Buffer], data_len: int, *,
               out: bytearray | memoryview | None = None) -> bytearray | memoryview:
        """The original bytes from any >= k payloads; DataUnavailable if fewer.

        `out`, if given, must be exactly data_len bytes long; it is filled and
        returned (lets the caller reuse one buffer).
        """
        lengths = self.stripe_lengths(data_len)
        frames: dict[int, list[memoryview]] = {}
        for i, payload in payloads.items():
            if not 0 <= i < self.n:
                continue
            split = self._split(payload, len(lengths))
            if split is not None:
                frames[i] = split
        if len(frames) < self.k:
            raise DataUnavailable(
                f"{len(frames)} usable shards of {self.k} needed to decode")
        if out is None:
            out = bytearray(data_len)
        elif len(out) != data_len:
            raise ValueError(f"output buffer is {len(out)} bytes, expected {data_len}")
        dst = memoryview(out).cast("B")
        all_data = all(i in frames for i in range(self.k))
        off = 0
        for s, length in enumerate(lengths):
            if not (all_data and self._copy_systematic(frames, s, length, dst[off:off + length])):
                self._decode_stripe(frames, s, length, dst[off:off + length])
            off += length
        return out

    def _copy_systematic(self, frames: dict[int, list[memoryview]], s: int, length: int,
                         dst: memoryview) -> bool:
        header = self._frag_header
        if header is None:
            return False
        piece = _ceil_div(length, self.k)
        spans = []
        for i in range(self.k):
            lo = min(i * piece, length)
            hi = min(lo + piece, length)
            # codec fragments are all padded to one size; m == 0 pieces are exact
            expect = header + (piece if self._driver is not None else hi - lo)
            if len(frames[i][s]) != expect:
                return False
            spans.append((lo, hi))
        for i, (lo, hi) in enumerate(spans):
            dst[lo:hi] = frames[i][s][header:header + hi - lo]
        return True

    def _decode_stripe(self, frames: dict[int, list[memoryview]], s: int, length: int,
                       dst: memoryview) -> None:
        if self._driver is None:
            raise DataUnavailable("a data shard of an uncoded (m=0) chunk is missing or damaged")
        # data fragments first: the codec then has the least to reconstruct;
        # bytes, never memoryviews (pyeclib aborts the process on those)
        chosen = [frames[i][s].tobytes() for i in sorted(frames)[:self.k]]
        try:
            stripe = self._driver.decode(chosen)
        except ECDriverError as e:
            raise DataUnavailable(f"erasure decoding failed: {e}") from None
        if len(stripe) != length:
            raise DataUnavailable(
                f"erasure decoding gave {len(stripe)} bytes for a stripe of {length}")
        dst[:] = stripe
