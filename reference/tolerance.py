"""The one place where parity thresholds live (the tolerance policy; docs/parity.md explains it
with the measurements behind every number).

Two fp32 implementations that sum in different orders differ by rounding, not by bugs; a bug
is a difference that rounding cannot explain. So wherever an fp64 run of the reference exists
the verdict is ATTRIBUTED against fp64: the C core's error against fp64 (e = c - r64) must be
within a small factor of fp32 PyTorch's own error against fp64 (e32 = r32 - r64), by three
measures, each of which sees a different kind of bug:

  RMS    rms(e)              <= RMS_FACTOR  * rms(e32)   + FLOOR_ULPS ulp of rms(r64)
         a systematic error anywhere (a constant rounded to 5 digits, a wrong scale);
  worst  max|e|              <= WORST_FACTOR * max|e32|  + FLOOR_ULPS ulp of max|r64|
         one wrong element, row or column, which an RMS would average away;
  bulk   median|e| (r64 != 0) <= BULK_FACTOR * median|e32| + FLOOR_ULPS ulp of median|r64|
         a small systematic error in a tensor whose RMS and worst element are dominated by a
         few legitimately noisy elements (elements whose gradient is near zero, which AdamW
         turns into steps of order lr).

The direct fp32-vs-fp32 test (torch.testing's form, below) is still computed and reported, but
it never passes a tensor that has an fp64 twin: a systematic error of a few ulps is inside any
sensible rtol and far outside rounding. It decides only where no fp64 run can exist.

Other valid fp32 runs. Where several equally valid fp32 evaluations exist (`ref32_alts`: the
kernel tests' sequential FMA chain beside torch's GEMV, the CUDA test's CPU trajectory), the
baseline of each measure is the largest of them. The lockstep engine needs none: it judges
every step from the C core's own state (lockstep.py), because free-running fp32 trajectories
spread 15 to 44x apart within three AdamW steps (docs/parity.md), and a baseline taken from
the worst of a few of them admits systematic errors of that size.

Tiny tensors. The three measures compare error distributions, which a handful of elements
does not have: the ratio of two single rounding errors is Cauchy-distributed, so C's error on
one element is as likely 5x as 1/5 of torch's. Below STAT_MIN_ELEMENTS elements, where the
caller gives an elementwise a-priori rounding-error bound (the kernel tests do: gamma_K times
the sum of |terms| for a K-term sum, Higham's bound, valid for every summation order), the
verdict is that bound against fp64 instead.

Shared errors. What counts is independent errors, not elements. In the attention backward
every dq and dk element of one softmax row inherits the rounding of that row's dot product
sum_j P_j dP_j, and where the softmax is saturated (P near 1 on one key) the difference dP -
dot cancels, so that one rounding dominates the row. With a few rows the three measures then
compare a handful of draws, Cauchy-like again: over 1,920 kernel cases with 2 to 24 rows
(T 2 to 6, 1 to 4 heads) 11 failed, all with peaky scores, some by RMS, some by the worst
element, some by the bulk, though C and torch compute the same formula; over 640 peaky cases
of 64 to 400 rows none used more than 0.63 of its limit. The caller names the number of
independent error sources (`sources`, here B x NH x T); below STAT_MIN_ELEMENTS the bound
decides, as for a tiny tensor.

Means. A scalar that is the mean of n judged elements (the loss, of the per-position losses)
has one element but not one error: its error is the mean of theirs. The reference's own error
on it is then one draw, often far smaller than its typical size, and the ratio of two draws is
Cauchy-like again: in bf16 parity (64 clean runs of d2 and d6, B x T = 64 to 256, 16 seeds
each) C's loss error was 0.01 to 67 times autocast's, 7 runs over the factor 4, while C's
per-position errors were 0.61 to 0.89 times autocast's by RMS; and the same autocast forward
on 1 and 2 threads drew 4.8e-5 and 1.4e-5. Given the elements (`mean_of`), the baseline of
each measure is instead the reference's standard error of the mean, rms(e32 of the elements)
/ sqrt(n): the typical size of its error on the mean when its per-element errors have random
signs, estimated from n samples instead of one. Over those runs the reference's own loss error
was at most 2.3 standard errors (RMS 0.8 to 1.1 per configuration) and the C core's at most
2.0 (RMS 0.7 to 1.0), so 4 standard errors are about 4 sigma. A bias of the C core's elements
(the same error in every position) still moves C's mean by the bias itself, against a
baseline that shrinks like 1/sqrt(n): 6 standard errors fail
(parity_tests/test_tolerance_means.py). Where the reference's errors are fp32 rounding, the
2-ulp floor decides, as before.

Tensors of means. A layernorm's mean statistic is B x T row means of its input, and with few
rows its measures compare a few such draws: at B 3, T 1 the C core's errors on the three
means were 1.13e-7 RMS, 1.5 standard errors of its input's errors, and failed the bulk
measure against torch's lucky 2.8e-8 (0.4 standard errors). Given the rows (`mean_of`
elements of the tensor's shape + (n,)), a tensor of fewer than STAT_MIN_ELEMENTS means is
judged against the standard error as above, its worst element against sqrt(2 ln k) of it for
k means (the size of the largest of k draws); with more means the distribution decides.

Anything non-finite in C where the reference is finite fails outright.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

#: float32 machine epsilon (2**-23).
EPS32 = float(np.finfo(np.float32).eps)

#: torch.testing's default float32 rtol (about 11 ulp).
TORCH_FP32_RTOL = 1.3e-6

#: The direct test (the verdict only where no fp64 run exists): every element within
#: RTOL * |r32| + RTOL * rms(r32). 16 x torch's rtol covers the reordered sums of one layer
#: and what deeper layers inherit; the rms-scaled atol because rounding error in a sum is
#: proportional to its terms, not its (possibly cancelled) result.
RTOL_FACTOR = 16.0
RTOL = TORCH_FP32_RTOL * RTOL_FACTOR

#: For tensors computed elementwise from bit-identical inputs (an optimizer update from the
#: same gradients, a clip scaling): torch's own float32 rtol (direct test only).
ELEMENTWISE_RTOL = TORCH_FP32_RTOL

#: The three attribution factors (docs/parity.md has the tables). Measured over 25 clean runs
#: of the lockstep engine (7 configs: T up to 197 over several query blocks, 1 to 4 heads,
#: B 1 to 4, 1 and 2 threads, 3 seeds; the AVX2 and portable GEMM kernels too): no row used
#: more than 0.62 of its limit; without the floors, the C core's error against fp64 over torch
#: fp32's was at most 1.6 by RMS, 2.6 by worst element and 2.1 by the bulk on activations and
#: gradients (AdamW's moments go higher only within the 2-ulp floor); at d12 (B 1, T 256, 3
#: steps, 2,343 rows) at most 1.07 / 1.5 / 2.0, no row above 0.50 of its limit. The weakest bugs of the
#: mutation catalogue, GELU's 0.044715 -> 0.04472 and sqrt(2/pi) rounded to 0.79788 (6e-6
#: relative), use 1.9x and 3.7x their limits at h0.fch_gelu (about 8x and 15x torch's error),
#: a per-token loss 1e-5 too high 2.0x at losses; every other bug 6x to 10^6x. So 4 / 6 / 4:
#: a margin of 1.6 or more above every clean row and of 1.9 below the weakest bug.
RMS_FACTOR = 4.0
WORST_FACTOR = 6.0
BULK_FACTOR = 4.0

#: An error of a couple of ulp of the tensor's scale is rounding whatever fp32 says (it
#: matters when the fp32 reference agrees with fp64 almost exactly, e.g. tensors one fp32
#: operation away from exact inputs).
FLOOR_ULPS = 2.0

#: Absolute floor for all-zero references (so zero == zero passes and nothing else).
TINY = 1e-30

#: The bulk measure is a median over at most this many elements, taken at a fixed stride
#: (a strided sample of an elementwise error is as good as the whole for a median, and keeps
#: compare() linear and small on a 38M-element wte).
BULK_SAMPLE = 1 << 16

#: Fewer elements than this are too few for a distribution of errors (module docstring): with
#: an elementwise error bound given, the bound decides.
STAT_MIN_ELEMENTS = 64


def gamma(k: int) -> float:
    """Higham's gamma_k = k u / (1 - k u), u = EPS32 / 2: |fl(sum of k terms) - sum| <=
    gamma_{k-1} * sum |terms| for any order of summation (products and FMAs included with k
    the number of roundings along the longest chain)."""
    u = EPS32 / 2
    return k * u / (1 - k * u)


def mean_standard_error(elems32: Any, elems64: Any, shape: Optional[Tuple[int, ...]] = None) -> Dict[str, Any]:
    """{mean_of_n, mean_se_32_vs_64}: the standard error of a mean of n elements whose errors
    against fp64 are e = elems32 - elems64, rms(e) / sqrt(n) (module docstring: Means). With
    `shape` (the judged tensor's) and elements of shape + (n,), each judged element is the
    mean of its row of n, and rms(e) is pooled over all rows (a layernorm's mean statistic)."""
    a32, a64 = np.asarray(elems32), np.asarray(elems64)
    if a32.shape != a64.shape:
        raise ValueError(f"mean_of: fp32 elements {a32.shape} != fp64 elements {a64.shape}")
    n = a32.size
    if shape is not None and tuple(a32.shape[:-1]) == tuple(shape) and a32.ndim >= 1:
        n = a32.shape[-1]  # a mean per element of the judged tensor
    elif shape is not None and int(np.prod(shape)) != 1:
        raise ValueError(f"mean_of: elements {a32.shape} are neither one mean nor a mean per element of {tuple(shape)}")
    e32, e64 = _flat(a32).astype(np.float64), _flat(a64).astype(np.float64)
    if n == 0 or not np.isfinite(e32).all():
        raise ValueError("mean_of: the reference's elements must be finite and not empty")
    e = e32 - e64
    return {"mean_of_n": int(n), "mean_se_32_vs_64": math.sqrt(_sumsq(e) / e.size) / math.sqrt(n)}


#: compare() walks tensors in chunks of this many elements: the float64 temporaries then stay
#: a few MB however large the tensor (a 124M-parameter model's wte has 38.6M elements, and a
#: whole-array float64 pass allocated ~300 MB per temporary).
CHUNK = 1 << 18


def _sumsq(x: np.ndarray) -> float:
    """Sum of squares without BLAS: numpy's dot hands mid-sized vectors to a multi-threaded
    BLAS whose spinning threads made compare() 10x slower on a busy 2-core machine."""
    return float(np.einsum("i,i->", x, x))


def _flat(a: Any) -> np.ndarray:
    a = np.asarray(a)
    return a.reshape(-1)  # a view when contiguous, else one copy in the source dtype


def _median(parts: List[np.ndarray]) -> float:
    if not parts:
        return 0.0
    a = np.concatenate(parts)
    return float(np.median(a)) if a.size else 0.0


def judge(row: Dict[str, Any], *, rms_factor: float = RMS_FACTOR, worst_factor: float = WORST_FACTOR,
          bulk_factor: float = BULK_FACTOR) -> Dict[str, Any]:
    """The verdict of the policy on a row of compare()'s statistics, in place (and returned):
    the attributed limits, each measure's ratio to its limit, `passed`, `method` and
    `tol_ratio` (<= 1 passes). Kept apart from the statistics so that a stored run can be
    judged again under other factors (docs/parity.md's before/after tables)."""
    sources = row.get("sources", int(np.prod(row["shape"])) if row["shape"] is not None else None)
    if "bound_ratio" in row and sources is not None and sources < STAT_MIN_ELEMENTS:
        ok = bool(row["nonfinite"] == 0 and row["bound_ratio"] <= 1.0)
        row.update(passed=ok, method="fp64-bound" if ok else "failed", tol_ratio=row["bound_ratio"],
                   attributed_passed=ok, failed_measures=[] if ok else ["bound"])
        return row
    if "runs_rmse_vs_64" not in row:
        row["passed"] = bool(row["direct_passed"])
        row["method"] = "fp32" if row["passed"] else "failed"
        row["tol_ratio"] = row["direct_ratio"]
        return row
    finite = row["nonfinite"] == 0
    base_rms, base_max, base_bulk = (max(row[k]) for k in ("runs_rmse_vs_64", "runs_max_vs_64", "runs_bulk_vs_64"))
    k = int(np.prod(row["shape"])) if row["shape"] is not None else 1
    if "mean_se_32_vs_64" in row and k < STAT_MIN_ELEMENTS:
        # means too few for a distribution: the reference's standard error, not its draws;
        # the largest of k draws of it is about sqrt(2 ln k) of them (docstring: Means)
        base_rms = base_bulk = row["mean_se_32_vs_64"]
        base_max = base_rms * max(1.0, math.sqrt(2.0 * math.log(k)))
    lim_rms = rms_factor * base_rms + FLOOR_ULPS * EPS32 * row["ref64_rms"] + TINY
    lim_max = worst_factor * base_max + FLOOR_ULPS * EPS32 * row["max_abs_ref64"] + TINY
    lim_bulk = bulk_factor * base_bulk + FLOOR_ULPS * EPS32 * row["bulk_ref64"] + TINY
    inf = math.inf
    ratios = {"rms": row["rmse_c_vs_64"] / lim_rms if finite else inf,
              "worst": row["max_abs_vs_64"] / lim_max if finite else inf,
              "bulk": row["bulk_c_vs_64"] / lim_bulk if finite else inf}
    row.update(rmse_32_vs_64=base_rms, max_abs_32_vs_64=base_max, bulk_32_vs_64=base_bulk,
               attributed_limit=lim_rms, worst_limit=lim_max, bulk_limit=lim_bulk,
               limit_ratio=ratios["rms"], worst_ratio=ratios["worst"], bulk_ratio=ratios["bulk"],
               attributed_ratio=(row["rmse_c_vs_64"] / base_rms if base_rms > 0 else
                                 (0.0 if row["rmse_c_vs_64"] == 0 else inf)) if finite else inf)
    failed = [k for k, v in ratios.items() if not v <= 1.0]  # (NaN-safe)
    row["attributed_passed"] = not failed
    row["failed_measures"] = failed
    row["passed"] = bool(finite and not failed)
    row["method"] = "fp64-attributed" if row["passed"] else "failed"
    row["tol_ratio"] = max(ratios.values())
    return row


def compare(name: str, c_array: Any, ref32: Any, ref64: Any = None, *, step: Optional[int] = None,
            rtol: float = RTOL, ref32_alts: Optional[Iterable[Any]] = None, bound: Any = None,
            mean_of: Optional[Tuple[Any, Any]] = None, sources: Optional[int] = None,
            **factors: float) -> Dict[str, Any]:
    """Compare one tensor of the C core with the fp32 (and optionally fp64) reference.

    Returns a dict with name, step, shape, max_abs, max_rel (max |c - r| / max(|r|, rms(r))),
    rmse (c vs ref32), ref_rms, the direct test (direct_passed, direct_ratio: the worst
    element's error over its bound), and when ref64 is given the attributed statistics:
    rmse_c_vs_64, max_abs_vs_64, max_rel_vs_64, bulk_c_vs_64 (median |c - r64| over elements
    with r64 != 0), ref64_rms, max_abs_ref64, bulk_ref64, and per fp32 run (ref32 first, then
    ref32_alts) runs_rmse_vs_64, runs_max_vs_64, runs_bulk_vs_64; rmse_ref32_vs_64 is ref32's
    alone. judge() adds the verdict (passed, method, tol_ratio, each limit and ratio).
    bound: an elementwise a-priori bound on |c - r64| (e.g. gamma(K) * |A| @ |B|), which
    decides for tensors of fewer than STAT_MIN_ELEMENTS elements (bound_ratio = the worst
    element's error over its bound). sources: how many independent rounding errors the
    tensor's errors come from, where its elements share them (module docstring: Shared
    errors); fewer than STAT_MIN_ELEMENTS need a bound, which then decides. mean_of:
    (elements32, elements64), the fp32 reference's and the fp64 run's elements when the
    tensor is their mean (the loss: the per-position losses); adds mean_of_n and
    mean_se_32_vs_64, the fp32 reference's standard error of that mean, the baseline of each
    measure in place of its single draw (module docstring: Means).
    `factors` (rms_factor, worst_factor, bulk_factor) override the policy's, for experiments.
    All arithmetic is in float64.
    """
    c_nd, r_nd = np.asarray(c_array), np.asarray(ref32)
    if c_nd.shape != r_nd.shape:
        raise ValueError(f"{name}: C shape {c_nd.shape} != reference shape {r_nd.shape}")
    shape = r_nd.shape
    c, r = _flat(c_nd), _flat(r_nd)
    r64 = None
    if ref64 is not None:
        r64_nd = np.asarray(ref64)
        if r64_nd.shape != shape:
            raise ValueError(f"{name}: fp64 reference shape {r64_nd.shape} != {shape}")
        r64 = _flat(r64_nd)
    runs = [r]
    for alt in (ref32_alts or ()):
        a_nd = np.asarray(alt)
        if a_nd.shape != shape:
            raise ValueError(f"{name}: alternative fp32 reference shape {a_nd.shape} != {shape}")
        runs.append(_flat(a_nd))
    n = r.size
    out: Dict[str, Any] = {"name": name, "step": step, "shape": list(shape)}
    if sources is not None:
        if not 0 < sources <= max(n, 1):
            raise ValueError(f"{name}: sources={sources} must be between 1 and the {n} elements")
        if sources < STAT_MIN_ELEMENTS and (bound is None or ref64 is None):
            raise ValueError(f"{name}: sources={sources} < {STAT_MIN_ELEMENTS} needs a bound and an fp64 run")
        out["sources"] = int(sources)
    f64 = np.float64
    stride = max(1, n // BULK_SAMPLE)

    # pass 1: the scales (RMS of the references); the fp32 reference must be finite
    ss_r = ss_64 = max_q = 0.0
    for i in range(0, n, CHUNK):
        rr = r[i:i + CHUNK].astype(f64)
        if not np.isfinite(rr).all():
            raise ValueError(f"{name}: the fp32 reference itself is not finite")
        ss_r += _sumsq(rr)
        if r64 is not None:
            qq = r64[i:i + CHUNK].astype(f64)
            ss_64 += _sumsq(qq)
            if qq.size:
                max_q = max(max_q, float(np.max(np.abs(qq))))
    ref_rms = math.sqrt(ss_r / n) if n else 0.0
    rms64 = math.sqrt(ss_64 / n) if n else 0.0
    scale, scale64 = max(ref_rms, TINY), max(rms64, TINY)
    atol = rtol * ref_rms

    # pass 2: everything else, chunk by chunk
    nonfinite = 0
    max_abs = max_rel = direct_ratio = max_abs64 = max_rel64 = 0.0
    worst_i, worst_rel = 0, -1.0
    ss_d = ss_c64 = 0.0
    ss_runs = [0.0] * len(runs)
    max_runs = [0.0] * len(runs)
    bulk_c: List[np.ndarray] = []
    bulk_runs: List[List[np.ndarray]] = [[] for _ in runs]
    bulk_ref: List[np.ndarray] = []
    for i in range(0, n, CHUNK):
        cc = c[i:i + CHUNK].astype(f64)
        rr = r[i:i + CHUNK].astype(f64)
        bad = ~np.isfinite(cc)
        nb = int(np.count_nonzero(bad))
        nonfinite += nb
        diff = cc - rr
        if nb:
            diff[bad] = 0.0
        ss_d += _sumsq(diff)
        d = np.abs(diff, out=diff)
        if nb:
            d[bad] = np.inf
        absr = np.abs(rr, out=rr)  # rr is not needed any more
        # elementwise bound of the direct test, and each element's error over it
        allowed = absr * rtol
        allowed += atol + TINY
        ratio = np.divide(d, allowed, out=allowed)
        k = int(np.argmax(ratio))
        direct_ratio = max(direct_ratio, float(ratio[k]))
        rel = np.maximum(absr, scale, out=absr)
        np.divide(d, rel, out=rel)
        k = int(np.argmax(rel))
        if rel[k] > worst_rel:
            worst_rel, worst_i = float(rel[k]), i + k
        max_rel = max(max_rel, float(rel[k]))
        max_abs = max(max_abs, float(d.max()))
        if r64 is not None:
            qq = r64[i:i + CHUNK].astype(f64)
            # the bulk sample: every stride-th element of the tensor whose fp64 value is not 0
            first = (-i) % stride
            pick = np.arange(first, qq.size, stride)
            pick = pick[qq[pick] != 0.0]
            bulk_ref.append(np.abs(qq[pick]))
            e = c[i:i + CHUNK] - qq  # C's error against fp64 (float32 - float64 -> float64)
            if nb:
                e[bad] = 0.0
            else:
                ss_c64 += _sumsq(e)
            a64 = np.abs(e, out=e)
            if nb:
                a64[bad] = np.inf
            max_abs64 = max(max_abs64, float(a64.max()))
            bulk_c.append(a64[pick].copy())
            aq = np.abs(qq)
            np.maximum(aq, scale64, out=aq)
            max_rel64 = max(max_rel64, float(np.max(np.divide(a64, aq, out=aq))))
            for j, run in enumerate(runs):
                e = np.subtract(run[i:i + CHUNK], qq, out=e)
                ss_runs[j] += _sumsq(e)
                np.abs(e, out=e)
                max_runs[j] = max(max_runs[j], float(e.max()))
                bulk_runs[j].append(e[pick].copy())
    # the ratio above decides except within rounding of the bound itself: then test exactly
    if not direct_ratio <= 1.0 + 1e-12:  # (NaN-safe)
        direct = False
    elif direct_ratio > 1.0 - 1e-12:
        direct = all(
            bool(np.all(np.abs(c[i:i + CHUNK].astype(f64) - r[i:i + CHUNK].astype(f64))
                        <= rtol * np.abs(r[i:i + CHUNK].astype(f64)) + (atol + TINY)))
            for i in range(0, n, CHUNK))
    else:
        direct = True

    out["max_abs"] = max_abs
    out["max_rel"] = max_rel
    out["rmse"] = math.sqrt(ss_d / n) if (n and nonfinite == 0) else (0.0 if n == 0 else math.inf)
    out["ref_rms"] = ref_rms
    out["nonfinite"] = nonfinite
    if n:
        idx = np.unravel_index(worst_i, shape)
        out["worst_index"] = [int(v) for v in idx]
        out["worst_c"] = float(c[worst_i])
        out["worst_ref"] = float(r[worst_i])
    out["direct_passed"] = bool(direct and nonfinite == 0)
    out["rtol"] = rtol
    out["direct_ratio"] = direct_ratio
    if r64 is not None:
        out["max_abs_vs_64"] = max_abs64
        out["max_rel_vs_64"] = max_rel64
        out["ref64_rms"] = rms64
        out["max_abs_ref64"] = max_q
        out["bulk_ref64"] = _median(bulk_ref)
        out["rmse_c_vs_64"] = (math.sqrt(ss_c64 / n) if n else 0.0) if nonfinite == 0 else math.inf
        out["bulk_c_vs_64"] = _median(bulk_c) if nonfinite == 0 else math.inf
        out["runs_rmse_vs_64"] = [math.sqrt(s / n) if n else 0.0 for s in ss_runs]
        out["runs_max_vs_64"] = max_runs
        out["runs_bulk_vs_64"] = [_median(b) for b in bulk_runs]
        out["rmse_ref32_vs_64"] = out["runs_rmse_vs_64"][0]
        if mean_of is not None:
            out.update(mean_standard_error(*mean_of, shape=shape))
        if bound is not None:
            bd = np.broadcast_to(np.asarray(bound, dtype=f64), shape).reshape(-1)
            e = np.abs(c.astype(f64) - r64.astype(f64))
            e[~np.isfinite(e)] = np.inf
            out["bound_ratio"] = float(np.max(e / (bd + TINY))) if n else 0.0
    return judge(out, **factors)


def compare_dicts(c: Mapping[str, Any], ref32: Mapping[str, Any], ref64: Optional[Mapping[str, Any]] = None,
                  names: Optional[Iterable[str]] = None, *, prefix: str = "", step: Optional[int] = None,
                  split_layers: bool = True, ref32_alts: Optional[List[Mapping[str, Any]]] = None,
                  mean_inputs: Optional[Mapping[str, str]] = None, **kw: Any) -> List[Dict[str, Any]]:
    """compare() over many tensors; layer-stacked parameters (qkvw, ...) are compared per
    layer and reported as e.g. 'grad.h3.qkvw'. Rows come back in `names` order.
    ref32_alts: dicts like ref32 from other valid fp32 runs (see compare). mean_inputs: name
    -> the name of the tensor whose rows it is the mean of, for compare's mean_of (with ref64)."""
    from .convert import LAYER_PARAMS

    rows = []
    alts = list(ref32_alts or ())
    for n in (list(names) if names is not None else list(ref32)):
        a, r = np.asarray(c[n]), np.asarray(ref32[n])
        r64 = None if ref64 is None else np.asarray(ref64[n])
        al = [np.asarray(d[n]) for d in alts]
        if split_layers and n in LAYER_PARAMS:
            for l in range(r.shape[0]):
                rows.append(compare(f"{prefix}h{l}.{n}", a[l], r[l], None if r64 is None else r64[l],
                                    step=step, ref32_alts=[x[l] for x in al], **kw))
        else:
            src = (mean_inputs or {}).get(n)
            mean_of = (ref32[src], ref64[src]) if src is not None and ref64 is not None else None
            rows.append(compare(prefix + n, a, r, r64, step=step, ref32_alts=al, mean_of=mean_of, **kw))
    return rows


def first_failure(rows: Iterable[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    for r in rows:
        if not r["passed"]:
            return r
    return None


def format_row(r: Mapping[str, Any]) -> str:
    s = (f"{r['name']:<22} {'ok ' if r['passed'] else 'BAD'} {r['method']:<16} max_abs={r['max_abs']:.3e} "
         f"max_rel={r['max_rel']:.3e} rmse={r['rmse']:.3e} ref_rms={r['ref_rms']:.3e}")
    if r.get("method") == "fp64-bound" or "bound" in r.get("failed_measures", []):
        s += f" bound_ratio={r['bound_ratio']:.3g}"
    elif "limit_ratio" in r:
        s += (f" c/64={r['rmse_c_vs_64']:.3e} 32/64={r['rmse_32_vs_64']:.3e} ratios rms {r['limit_ratio']:.3g}"
              f" worst {r['worst_ratio']:.3g} bulk {r['bulk_ratio']:.3g}")
    if not r["passed"] and "worst_index" in r:
        s += f" worst@{r['worst_index']} c={r['worst_c']:.7g} ref={r['worst_ref']:.7g}"
    return s


def format_rows(rows: Iterable[Mapping[str, Any]]) -> str:
    return "\n".join(format_row(r) for r in rows)
