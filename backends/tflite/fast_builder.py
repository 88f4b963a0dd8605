"""A flatbuffers Builder whose per-scalar primitives do less work, for the same bytes.

Why: packing a model's graph (its tensors, operators, signatures) with the generated object
API calls the builder's primitives a few thousand times per hundred tensors, and in the
stock Python builder each one checks its number against the type's range
(`enforce_number`), goes through `encode.Write` and re-derives offsets in several calls: the
TFLite writer spent most of its graph packing there (a tiny KerasHub BERT: 7.5 ms of 11).

`FastBuilder` overrides those primitives with the same arithmetic inlined. It lays out every
byte exactly as `flatbuffers.Builder` does (the same alignment, vtable sharing and
order): tests/test_tflite_fast_builder.py packs models both ways and compares the bytes, and
the recorded artifact hashes (tests/test_lifting_identity.py) hold through the writer's own
memory-mapped builder. What it drops is the stock builder's checks of its caller: an
integer out of its type's range still fails (`struct.error` from `pack_into` instead of a
TypeError), but a bool slot packs any truthy value as true, and slots are not checked to be
inside an object. The object API's generated `Pack` methods, the only caller, never rely on
those checks."""

from __future__ import annotations

import flatbuffers
from flatbuffers import number_types as N
from flatbuffers import packer

_UOFFSET = packer.uoffset
_SOFFSET = packer.soffset
_VOFFSET = packer.voffset


class FastBuilder(flatbuffers.Builder):
    """flatbuffers.Builder with leaner scalar primitives (see the module docstring)."""

    def Prep(self, size, additionalBytes):
        if size > self.minalign:
            self.minalign = size
        head = self.head
        buf_len = len(self.Bytes)
        align = (~(buf_len - head + additionalBytes) + 1) & (size - 1)
        needed = align + size + additionalBytes
        while head < needed:
            old = buf_len
            self.GrowByteBuffer()
            buf_len = len(self.Bytes)
            head += buf_len - old
        if align:
            self.Bytes[head - align:head] = b"\x00" * align
            head -= align
        self.head = head

    def Place(self, x, flags):
        self.head -= flags.bytewidth
        flags.packer_type.pack_into(self.Bytes, self.head, x)

    def Prepend(self, flags, off):
        self.Prep(flags.bytewidth, 0)
        self.head -= flags.bytewidth
        flags.packer_type.pack_into(self.Bytes, self.head, off)

    def PrependSlot(self, flags, o, x, d):
        if x != d or (self.forceDefaults and d is not None):
            self.Prep(flags.bytewidth, 0)
            self.head -= flags.bytewidth
            flags.packer_type.pack_into(self.Bytes, self.head, x)
            self.current_vtable[o] = len(self.Bytes) - self.head

    def PlaceUOffsetT(self, x):
        self.head -= 4
        _UOFFSET.pack_into(self.Bytes, self.head, x)

    def PlaceSOffsetT(self, x):
        self.head -= 4
        _SOFFSET.pack_into(self.Bytes, self.head, x)

    def PlaceVOffsetT(self, x):
        self.head -= 2
        _VOFFSET.pack_into(self.Bytes, self.head, x)

    def PrependVOffsetT(self, x):
        self.Prep(2, 0)
        self.head -= 2
        _VOFFSET.pack_into(self.Bytes, self.head, x)

    def _prepend_offset(self, off, offset_packer):
        # An offset to `off`, relative to where it is written (aligned first).
        self.Prep(4, 0)
        offset = len(self.Bytes) - self.head
        if off > offset:
            raise flatbuffers.builder.OffsetArithmeticError(
                "flatbuffers: Offset arithmetic error.")
        self.head -= 4
        offset_packer.pack_into(self.Bytes, self.head, offset - off + 4)

    def PrependUOffsetTRelative(self, off):
        self._prepend_offset(off, _UOFFSET)

    def PrependSOffsetTRelative(self, off):
        self._prepend_offset(off, _SOFFSET)

    def PrependUOffsetTRelativeSlot(self, o, x, d):
        if x != d or self.forceDefaults:
            self.PrependUOffsetTRelative(x)
            self.current_vtable[o] = len(self.Bytes) - self.head

    def Slot(self, slotnum):
        self.current_vtable[slotnum] = len(self.Bytes) - self.head

    def PrependInt32(self, x):
        self.Prep(4, 0)
        self.head -= 4
        N.Int32Flags.packer_type.pack_into(self.Bytes, self.head, x)
