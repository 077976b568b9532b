"""Small matrix products in SIMD registers, as LLVM vector code inside numba kernels.

numba's own loops keep no sums in registers (each `acc[o] += w * x` goes through memory) and
vectorize nothing across sequences (measured): `_mv` and `_mv_rows` hold the sums of a block of
outputs in vector registers while the inputs stream by, each weight vector loaded once for
every sequence of a group. Each sum runs in input order, each product contracted with its add
(an fma, one rounding), so how outputs are blocked and sequences grouped changes no number:
a sequence's results are the same alone or beside others (tests/test_fused.py).

VECTOR floats per vector and ACCUMULATORS vectors of sums: 16 and 16 with AVX-512 (32
registers), else 8 and 8 (AVX2's 16; other CPUs split the vectors as LLVM sees fit).
"""

from __future__ import annotations

import os

from llvmlite import ir
from numba import types as nbtypes
from numba.core import cgutils
from numba.extending import intrinsic

CONTRACT = ("contract",)  # of fastmath only contraction: a product fused with its add
MAX_LANES = 8  # sequences in one group at most (more gain nothing per sequence, measured)


def _vector_shape() -> tuple[int, int]:
    """(floats per SIMD vector, vectors of sums held at once) for the CPU numba compiles for."""
    from llvmlite import binding

    name = os.environ.get("NUMBA_CPU_NAME", "host")  # numba may be told to compile for another
    if name == "host":
        wide = bool(binding.get_host_cpu_features().get("avx512f", False))
    else:
        wide = "+avx512f" in os.environ.get("NUMBA_CPU_FEATURES", "")
    return (16, 16) if wide else (8, 8)


VECTOR, ACCUMULATORS = _vector_shape()


def _fast_half() -> bool:
    """Whether the CPU numba compiles for widens float16 in hardware (x86: F16C; ARMv8 always);
    without it the widening still works, in software (slower than float32 loads)."""
    import platform

    from llvmlite import binding

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    if os.environ.get("NUMBA_CPU_NAME", "host") == "host":
        return bool(binding.get_host_cpu_features().get("f16c", False))
    return "+f16c" in os.environ.get("NUMBA_CPU_FEATURES", "")


FAST_HALF = _fast_half()


def _blocks_per_pass(lanes: int) -> int:
    """Vectors of outputs summed at once for a group of `lanes` sequences."""
    return max(1, min(4, ACCUMULATORS // lanes))


def _f32_array(a, ndim: int) -> bool:
    return (isinstance(a, nbtypes.Array) and a.dtype == nbtypes.float32 and a.layout == "C"
            and a.ndim == ndim)


def _weight_array(a) -> bool:
    """A table of weights: float32, or uint16 holding the bits of float16 values (half the
    bytes to stream; each is widened to float32 exactly when loaded, so the sums are those of
    the same values in float32)."""
    return _f32_array(a, 2) or (isinstance(a, nbtypes.Array) and a.dtype == nbtypes.uint16
                                and a.layout == "C" and a.ndim == 2)


def _emit_products(context, builder, acc, wt, src, n_in, row_of, half=False):
    """acc[w, :] += sum over j < n_in of src[w, j] * wt[row_of(j), :], for every sequence w of
    acc (arrays as numba's structs): the sequences in groups of 8, 4, 2 and 1; per group,
    passes over blocks of outputs (`_blocks_per_pass` vectors of VECTOR, then single vectors,
    then the leftover outputs one by one), their sums in registers over all j. `half`: wt
    holds float16 bits (uint16), widened to float32 as loaded."""
    f32 = ir.FloatType()
    f16 = ir.HalfType()
    i16 = ir.IntType(16)
    i64 = ir.IntType(64)
    n_lanes = builder.extract_value(acc.shape, 0)
    n_out = builder.extract_value(wt.shape, 1)
    n_src = builder.extract_value(src.shape, 1)

    def const(v):
        return ir.Constant(i64, v)

    def at(ptr, row, width, col, ty):  # &ptr[row * width + col], as a pointer to ty
        return builder.bitcast(builder.gep(ptr, [builder.add(builder.mul(row, width), col)]),
                               ty.as_pointer())

    def splat(value, vw):
        if vw == 1:
            return value
        ty = ir.VectorType(f32, vw)
        undef = ir.Constant(ty, ir.Undefined)
        one = builder.insert_element(undef, value, const(0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vw), [0] * vw)
        return builder.shuffle_vector(one, undef, mask)

    def weights(r, col, vw):  # wt[r, col : col + vw] as float32
        if not half:
            ty = f32 if vw == 1 else ir.VectorType(f32, vw)
            return builder.load(at(wt.data, r, n_out, col, ty), align=4)
        bits, h, ty = ((i16, f16, f32) if vw == 1 else
                       (ir.VectorType(i16, vw), ir.VectorType(f16, vw), ir.VectorType(f32, vw)))
        v = builder.load(at(wt.data, r, n_out, col, bits), align=2)
        return builder.fpext(builder.bitcast(v, h), ty)

    def block(lane0, nl, o0, nb, vw):
        """The sums of sequences lane0 .. lane0 + nl - 1, outputs o0 .. o0 + nb * vw - 1."""
        ty = f32 if vw == 1 else ir.VectorType(f32, vw)
        slots = [[cgutils.alloca_once(builder, ty) for _ in range(nb)] for _ in range(nl)]
        cols = [builder.add(o0, const(b * vw)) for b in range(nb)]
        for w in range(nl):
            row = builder.add(lane0, const(w))
            for b in range(nb):
                builder.store(builder.load(at(acc.data, row, n_out, cols[b], ty), align=4),
                              slots[w][b])
        with cgutils.for_range(builder, n_in) as inp:
            j = inp.index
            r = row_of(j)
            wv = [weights(r, cols[b], vw) for b in range(nb)]
            for w in range(nl):
                x = builder.load(at(src.data, builder.add(lane0, const(w)), n_src, j, f32))
                xv = splat(x, vw)
                for b in range(nb):
                    prod = builder.fmul(wv[b], xv, flags=CONTRACT)
                    builder.store(builder.fadd(builder.load(slots[w][b]), prod,
                                               flags=CONTRACT), slots[w][b])
        for w in range(nl):
            row = builder.add(lane0, const(w))
            for b in range(nb):
                builder.store(builder.load(slots[w][b]),
                              at(acc.data, row, n_out, cols[b], ty), align=4)

    def lanes(lane0, nl):
        """Every output of sequences lane0 .. lane0 + nl - 1."""
        nb = _blocks_per_pass(nl)
        wide = builder.udiv(n_out, const(nb * VECTOR))
        with cgutils.for_range(builder, wide) as p:
            block(lane0, nl, builder.mul(p.index, const(nb * VECTOR)), nb, VECTOR)
        done = builder.mul(wide, const(nb * VECTOR))
        single = builder.udiv(builder.sub(n_out, done), const(VECTOR))
        with cgutils.for_range(builder, single) as p:
            block(lane0, nl, builder.add(done, builder.mul(p.index, const(VECTOR))), 1, VECTOR)
        done = builder.add(done, builder.mul(single, const(VECTOR)))
        with cgutils.for_range(builder, builder.sub(n_out, done)) as p:
            block(lane0, nl, builder.add(done, p.index), 1, 1)

    lane = cgutils.alloca_once_value(builder, const(0))
    for nl in (MAX_LANES, 4, 2, 1):  # whole groups of 8, then at most one of 4, 2 and 1
        left = builder.sub(n_lanes, builder.load(lane))
        if nl == MAX_LANES:
            with cgutils.for_range(builder, builder.udiv(left, const(nl))):
                lanes(builder.load(lane), nl)
                builder.store(builder.add(builder.load(lane), const(nl)), lane)
        else:
            with builder.if_then(builder.icmp_unsigned(">=", left, const(nl))):
                lanes(builder.load(lane), nl)
                builder.store(builder.add(builder.load(lane), const(nl)), lane)


def _arrays(context, builder, sig, args):
    return [context.make_array(t)(context, builder, v) if isinstance(t, nbtypes.Array) else v
            for t, v in zip(sig.args, args, strict=True)]


@intrinsic
def _mv(typingctx, acc, wt, src):
    """acc (W, n_out) += src (W, n_in) @ wt (n_in, n_out), for W sequences at once
    (C-contiguous; acc and src float32, wt float32 or float16 bits as uint16): each sum in input
    order, each product fused with its add."""
    if not (_f32_array(acc, 2) and _weight_array(wt) and _f32_array(src, 2)):
        return None
    half = wt.dtype == nbtypes.uint16

    def codegen(context, builder, sig, args):
        a_acc, a_wt, a_src = _arrays(context, builder, sig, args)
        _emit_products(context, builder, a_acc, a_wt, a_src,
                       builder.extract_value(a_wt.shape, 0), lambda j: j, half)
        return context.get_dummy_value()

    return nbtypes.void(acc, wt, src), codegen


@intrinsic
def _mv_rows(typingctx, acc, table, rows, src, n):
    """acc (W, n_out) += sum over j < n of src[:, j] * table[rows[j]] (rows int64, unchecked):
    a product with the rows of `table` chosen at run time, as `_mv` sums them."""
    if not (_f32_array(acc, 2) and _f32_array(table, 2) and _f32_array(src, 2)
            and isinstance(rows, nbtypes.Array) and rows.dtype == nbtypes.int64
            and rows.layout == "C" and rows.ndim == 1 and isinstance(n, nbtypes.Integer)):
        return None

    def codegen(context, builder, sig, args):
        a_acc, a_table, a_rows, a_src, n_used = _arrays(context, builder, sig, args)
        n_used = context.cast(builder, n_used, sig.args[4], nbtypes.int64)

        def row_of(j):
            return builder.load(builder.gep(a_rows.data, [j]))

        _emit_products(context, builder, a_acc, a_table, a_src, n_used, row_of)
        return context.get_dummy_value()

    return nbtypes.void(acc, table, rows, src, n), codegen
