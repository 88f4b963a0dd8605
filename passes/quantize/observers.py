"""Range observers for post-training calibration (pure NumPy).

An observer sees the float arrays a value takes on the representative data, one batch at a
time (`update(array)`), and answers the clipping range to quantize it with (`range()`):

    obs = make_observer("percentile", percentile=99.99)
    for batch in batches:
        obs.update(batch)
    lo, hi = obs.range()

| method           | range                                                            |
|------------------|------------------------------------------------------------------|
| `minmax`         | running min / max (TF MIN_MAX)                                   |
| `moving_average` | EMA of per-batch min / max, momentum 0.9 (TF AVERAGE_MIN_MAX,    |
|                  | tfmot MovingAverageQuantizer); the first batch initialises       |
| `percentile`     | [100-p, p] percentiles of a bounded histogram (TF HISTOGRAM_     |
|                  | PERCENTILE); symmetric: the p-th percentile a of |x|, (-a, a)    |
| `mse`            | the clipping range minimising expected quantization MSE over the |
|                  | bounded histogram (TF HISTOGRAM_MSE_BRUTEFORCE)                  |

`symmetric=True` makes every observer answer (-a, a). Ranges are NOT forced to contain 0: the
quantizer does that when it turns a range into scale / zero point. Non-finite elements (NaN,
±inf) are ignored, so one overflowing activation cannot wreck a whole range.

The histogram observers keep `bins` counts no matter how much data they see: when a batch falls
outside the current histogram, the range grows by an integer factor k (new bin width = k × old)
anchored on an old bin edge, so every old bin lands wholly in one new bin and the merge is
exact (a `bincount`), as TF's histogram calibrator and PyTorch's HistogramObserver do.
"""

from __future__ import annotations

import abc

import math

import numpy as np

from ...ir.errors import ConversionError, TensorforgeError

METHODS = ("minmax", "moving_average", "percentile", "mse")


class NoDataError(TensorforgeError):
    """`range()` of an observer that has seen no finite element."""


def _finite(array) -> tuple[np.ndarray, float, float]:
    """(flat float array without NaN / inf, its min, its max); one min and one max pass over
    the data, and a copy only when non-finite elements are present. min/max are nan when
    nothing finite is left."""
    a = np.asarray(array)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    a = a.reshape(-1)
    if a.size == 0:
        return a, math.nan, math.nan
    lo, hi = float(a.min()), float(a.max())
    if not math.isfinite(lo + hi):
        a = a[np.isfinite(a)]
        if a.size == 0:
            return a, math.nan, math.nan
        lo, hi = float(a.min()), float(a.max())
    return a, lo, hi


def _symmetric(lo: float, hi: float) -> tuple[float, float]:
    a = max(abs(lo), abs(hi))
    return -a, a


class Observer(abc.ABC):
    """Base class: `update(array)` with every batch, then `range() -> (lo, hi)`."""

    method = ""

    def __init__(self, *, bits: int = 8, symmetric: bool = False):
        self.bits = int(bits)
        self.symmetric = bool(symmetric)
        self.count = 0          # finite elements seen

    @abc.abstractmethod
    def update(self, array) -> None:
        """Observes one batch of values."""

    @abc.abstractmethod
    def range(self) -> tuple[float, float]:
        """The clipping range (lo, hi) as Python floats; raises NoDataError before any data."""

    def _need_data(self) -> None:
        if self.count == 0:
            raise NoDataError(f"{self.method} observer has seen no finite values")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bits={self.bits}, symmetric={self.symmetric})"


class MinMaxObserver(Observer):
    """Running min and max of everything seen."""

    method = "minmax"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.lo = math.inf
        self.hi = -math.inf

    def update(self, array) -> None:
        """Folds the batch's min/max into the running ones."""
        a, lo, hi = _finite(array)
        if a.size == 0:
            return
        self.count += a.size
        self.lo = min(self.lo, lo)
        self.hi = max(self.hi, hi)

    def range(self) -> tuple[float, float]:
        """(min, max) seen, or (-max|x|, max|x|) when symmetric."""
        self._need_data()
        return _symmetric(self.lo, self.hi) if self.symmetric else (self.lo, self.hi)


class MovingAverageObserver(Observer):
    """Exponential moving average of per-batch min / max: lo = m·lo + (1-m)·batch_min.

    "Batch" is whatever one `update` receives: in `calibrate()` that is a run of up to
    `batch_size` samples concatenated, so the statistics are per-run, not per-sample."""

    method = "moving_average"

    def __init__(self, *, momentum: float = 0.9, **kw):
        super().__init__(**kw)
        if not 0.0 <= momentum < 1.0:
            raise ConversionError(f"moving_average momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.lo = self.hi = 0.0

    def update(self, array) -> None:
        """Moves the averages toward this batch's min / max (the first batch initialises)."""
        a, lo, hi = _finite(array)
        if a.size == 0:
            return
        if self.count == 0:
            self.lo, self.hi = lo, hi
        else:
            m = self.momentum
            self.lo = m * self.lo + (1.0 - m) * lo
            self.hi = m * self.hi + (1.0 - m) * hi
        self.count += a.size

    def range(self) -> tuple[float, float]:
        """The averaged (min, max), symmetrised when asked."""
        self._need_data()
        return _symmetric(self.lo, self.hi) if self.symmetric else (self.lo, self.hi)


class HistogramObserver(Observer):
    """A histogram of `bins` equal-width bins whose range grows to cover all data seen.

    Memory is O(bins) whatever the data: growing the range merges bins exactly (see module
    doc). The exact min / max are tracked too, so answers never leave the observed range."""

    def __init__(self, *, bins: int = 2048, **kw):
        super().__init__(**kw)
        if bins < 8:
            raise ConversionError(f"histogram observers need at least 8 bins, got {bins}")
        self.bins = int(bins)
        self.counts = np.zeros(self.bins, np.float64)
        self.start = 0.0        # left edge of bin 0
        self.width = 0.0        # bin width (0 until the first batch)
        self.lo = math.inf      # exact min / max seen
        self.hi = -math.inf

    @property
    def edges(self) -> np.ndarray:
        """The bins+1 bin edges."""
        return self.start + self.width * np.arange(self.bins + 1, dtype=np.float64)

    def _grow(self, lo: float, hi: float) -> None:
        """Widens the histogram to cover [lo, hi], merging the old counts into the new bins."""
        n, w, start = self.bins, self.width, self.start
        end = start + n * w
        if lo >= start and hi <= end:
            return
        # New start = start - j·w and new width = k·w (integers j >= 0, k >= 2): old bin i
        # becomes part of new bin (i + j) // k, exactly.
        j = math.ceil((start - lo) / w) if lo < start else 0
        k = max(2, math.ceil((max(hi, end) - start + j * w) / (n * w)))
        if j < 2 ** 52 and k < 2 ** 52:
            new = np.bincount((np.arange(n, dtype=np.int64) + j) // k, weights=self.counts,
                              minlength=n)
            # Floating slack in the ceil can push the last index to n: it holds edge values.
            if new.size > n:
                new[n - 1] += new[n:].sum()
                new = new[:n]
            self.counts = new
            self.start, self.width = start - j * w, k * w
            return
        # The old histogram is vanishingly narrow next to the new range (e.g. a first batch
        # of constant zeros): re-bin its mass by bin centre; the error is below one new bin.
        centres = start + w * (np.arange(n) + 0.5)
        self.start, self.width = min(lo, start), (max(hi, end) - min(lo, start)) / n
        self.counts = self._bin(centres, self.counts)

    def _bin(self, values: np.ndarray, weights=None) -> np.ndarray:
        # float64 index arithmetic: float32 would misplace values near bin edges of wide ranges
        idx = (values.astype(np.float64) - self.start) * (1.0 / self.width)
        np.floor(idx, out=idx)
        np.clip(idx, 0, self.bins - 1, out=idx)
        return np.bincount(idx.astype(np.intp), weights=weights,
                           minlength=self.bins).astype(np.float64)

    def update(self, array) -> None:
        """Adds the batch to the histogram, growing its range first when needed."""
        a, lo, hi = _finite(array)
        if a.size == 0:
            return
        amin, amax = lo, hi
        if self.width == 0.0:
            span = hi - lo
            if span <= 0.0:  # a constant batch: give it a small, nonzero range
                span = max(abs(lo), 1.0) * 1e-6
                lo, hi = lo - span / 2, lo + span / 2
            self.start, self.width = lo, span / self.bins
        else:
            self._grow(lo, hi)
        self.counts += self._bin(a)
        self.count += a.size
        self.lo, self.hi = min(self.lo, amin), max(self.hi, amax)

    def _cdf_at(self, x: np.ndarray) -> np.ndarray:
        """Mass below each x, interpolating linearly inside bins."""
        cum = np.concatenate([[0.0], np.cumsum(self.counts)])
        return np.interp(x, self.edges, cum)

    def percentile_range(self, p: float) -> tuple[float, float]:
        """The [100-p, p] percentiles (symmetric: the p-th percentile a of |x|, as (-a, a))."""
        self._need_data()
        total = self.counts.sum()
        edges = self.edges
        cum = np.concatenate([[0.0], np.cumsum(self.counts)])
        if self.symmetric:
            # Mass of [-a, a] as a function of a, on every |edge| (piecewise linear between).
            cand = np.unique(np.abs(np.concatenate([edges, [0.0]])))
            mass = self._cdf_at(cand) - self._cdf_at(-cand)
            a = float(np.interp(p / 100.0 * total, mass, cand))
            a = min(a, max(abs(self.lo), abs(self.hi)))
            return -a, a
        lo = float(np.interp((100.0 - p) / 100.0 * total, cum, edges))
        hi = float(np.interp(p / 100.0 * total, cum, edges))
        return self._clamp(lo, hi)

    def _clamp(self, lo: float, hi: float) -> tuple[float, float]:
        """(lo, hi) moved inside the exact observed [min, max], keeping lo <= hi (a range
        from bin edges can poke out of it, e.g. around constant data)."""
        lo = min(max(lo, self.lo), self.hi)
        hi = max(min(hi, self.hi), lo)
        return lo, hi


class PercentileObserver(HistogramObserver):
    """Clips to the [100-p, p] percentiles of the data (bounded-histogram estimate, within one
    bin width of the exact percentile)."""

    method = "percentile"

    def __init__(self, *, percentile: float = 99.99, **kw):
        super().__init__(**kw)
        if not 50.0 < percentile <= 100.0:
            raise ConversionError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = float(percentile)

    def range(self) -> tuple[float, float]:
        """The percentile clipping range."""
        return self.percentile_range(self.percentile)


class MseObserver(HistogramObserver):
    """Clips to the range minimising the expected quantization error over the histogram:
    rounding noise Δ²/12 for every element inside the range plus the squared clipping distance
    of every element outside it (bin centres stand for their elements).

    Candidates are bin edges (so no bin straddles a clip point); the error model uses the
    range the quantizer will really use, i.e. widened to contain 0. Asymmetric: a coarse grid
    of (lo, hi) edge pairs, then a full-resolution grid around the coarse winner; symmetric:
    every |edge|. The answer is intersected with the observed [min, max]."""

    method = "mse"
    COARSE = 128     # candidates per side in the coarse asymmetric search

    def _levels(self) -> int:
        # Steps across the range: 2^b - 1 (asymmetric) or 2^b - 2 (symmetric narrow range,
        # as TFLite quantizes symmetric tensors).
        return 2 ** self.bits - (2 if self.symmetric else 1)

    def _prefix(self):
        c = self.counts
        x = self.start + self.width * (np.arange(self.bins) + 0.5)
        zero = np.zeros(1)
        return (np.concatenate([zero, np.cumsum(c)]), np.concatenate([zero, np.cumsum(c * x)]),
                np.concatenate([zero, np.cumsum(c * x * x)]))

    def _mse(self, i: np.ndarray, j: np.ndarray, a: np.ndarray, b: np.ndarray, pre
             ) -> np.ndarray:
        """Expected squared error for the clip range [a, b] where bins < i lie below a and
        bins >= j lie above b (arrays broadcast together)."""
        c0, c1, c2 = pre
        below = a * a * c0[i] - 2 * a * c1[i] + c2[i]
        above = (c2[-1] - c2[j]) - 2 * b * (c1[-1] - c1[j]) + b * b * (c0[-1] - c0[j])
        step = (np.maximum(b, 0) - np.minimum(a, 0)) / self._levels()
        inside = (c0[j] - c0[i]) * step * step / 12.0
        return below + above + inside

    def range(self) -> tuple[float, float]:
        """The MSE-optimal clipping range."""
        self._need_data()
        n = self.bins
        edges = self.edges
        pre = self._prefix()
        if self.symmetric:
            # Candidate a = |e| for every edge: bins entirely outside [-a, a] are clipped.
            cand = np.unique(np.abs(edges))
            cand = cand[cand > 0]
            i = np.searchsorted(edges, -cand, side="right") - 1   # bins < i lie below -a
            i = np.clip(i, 0, n)
            j = np.clip(np.searchsorted(edges, cand, side="left"), 0, n)  # bins >= j above a
            err = self._mse(i, j, -cand, cand, pre)
            a = float(cand[int(np.argmin(err))])
            a = min(a, max(abs(self.lo), abs(self.hi)))
            return -a, a
        # Asymmetric: lo edge index i in [0, z], hi edge index j in [z', n] where the zero bin
        # splits the edges (a range that excludes 0 is widened to 0 by the quantizer anyway).
        z = int(np.clip(np.searchsorted(edges, 0.0, side="right"), 0, n))
        lo_idx = np.arange(0, min(max(z, 1), n + 1))
        hi_idx = np.arange(min(z, n), n + 1)

        def best(li, hj):
            ii, jj = np.meshgrid(li, hj, indexing="ij")
            err = self._mse(ii, jj, edges[ii], edges[jj], pre)
            k = np.unravel_index(int(np.argmin(err)), err.shape)
            return int(li[k[0]]), int(hj[k[1]])

        s_lo = max(1, math.ceil(lo_idx.size / self.COARSE))
        s_hi = max(1, math.ceil(hi_idx.size / self.COARSE))
        bi, bj = best(np.unique(np.append(lo_idx[::s_lo], lo_idx[-1])),
                      np.unique(np.append(hi_idx[::s_hi], hi_idx[-1])))
        if s_lo > 1 or s_hi > 1:
            fine_lo = lo_idx[(lo_idx >= bi - s_lo) & (lo_idx <= bi + s_lo)]
            fine_hi = hi_idx[(hi_idx >= bj - s_hi) & (hi_idx <= bj + s_hi)]
            bi, bj = best(fine_lo, fine_hi)
        return self._clamp(float(edges[bi]), float(edges[bj]))


_CLASSES = {"minmax": MinMaxObserver, "moving_average": MovingAverageObserver,
            "percentile": PercentileObserver, "mse": MseObserver}


def make_observer(method: str, *, bits: int = 8, symmetric: bool = False,
                  percentile: float = 99.99, momentum: float = 0.9, bins: int = 2048
                  ) -> Observer:
    """A fresh observer for `method` (minmax, moving_average, percentile, mse). Options a
    method does not use are ignored, so one call site can build any kind."""
    cls = _CLASSES.get(method)
    if cls is None:
        raise ConversionError(f"unknown calibration method {method!r} "
                              f"(known: {', '.join(METHODS)})")
    kw: dict = {"bits": bits, "symmetric": symmetric}
    if cls is MovingAverageObserver:
        kw["momentum"] = momentum
    if issubclass(cls, HistogramObserver):
        kw["bins"] = bins
    if cls is PercentileObserver:
        kw["percentile"] = percentile
    return cls(**kw)


def weight_range(array, axis: int | None = None, symmetric: bool = False):
    """Range of a weight tensor: per-tensor (Python floats) when `axis` is None, else per
    channel along `axis` (two float64 arrays of length shape[axis]). Symmetric gives
    (-max|w|, max|w|). Weights are constants, so this is exact min/max, no histogram."""
    w = np.asarray(array, dtype=np.float64)
    if axis is None:
        if w.size == 0:
            raise NoDataError("weight_range of an empty tensor")
        lo, hi = float(w.min()), float(w.max())
        return _symmetric(lo, hi) if symmetric else (lo, hi)
    axis = axis % w.ndim
    other = tuple(d for d in range(w.ndim) if d != axis)
    if w.shape[axis] == 0 or any(w.shape[d] == 0 for d in other):
        raise NoDataError(f"weight_range of an empty tensor of shape {w.shape}")
    lo, hi = w.min(axis=other), w.max(axis=other)
    if symmetric:
        a = np.maximum(np.abs(lo), np.abs(hi))
        return -a, a
    return lo, hi
