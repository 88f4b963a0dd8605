"""Fuzzing campaigns over every place that reads user input.

Each campaign (one module each) pairs a seeded input generator with the invariant every
reader must keep: an input either works or raises a TensorforgeError whose message names the
thing at fault; no other exception type, no hang (a per-input alarm), and nothing left
behind by a failure (no half-written artifact). `python -m tensorforge.tools.fuzz --n 1000`
runs a long campaign and prints the inputs per campaign and the deduplicated crash
signatures (exception type + innermost tensorforge frame); tests/fuzz runs each campaign on
a few inputs.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...ir.errors import TensorforgeError

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
CAMPAIGNS = ("parser", "pipeline", "config", "calibration", "keras", "savedmodel", "cli",
             "plugins")


class Hang(BaseException):
    """Raised by the per-input alarm (a BaseException, so no reader's handler swallows it)."""


class Unnamed(Exception):
    """A TensorforgeError whose message does not name the thing at fault."""


class HalfWritten(Exception):
    """A failed input left a file behind."""


@dataclass
class Case:
    """One input: a short description (for crash reports), the function that feeds it to the
    reader under test, what the error message must mention (any of), and the directory in
    which a failure must leave nothing behind."""

    describe: str
    run: Callable[[], Any]
    names: tuple[str, ...] = ()
    out_dir: Path | None = None


@dataclass
class Campaign:
    """A seeded generator of Cases: `make(rng, i, work)` builds input `i` under `work`."""

    name: str
    make: Callable[[random.Random, int, Path], Case]
    setup: Callable[[Path], None] | None = None
    scale: float = 1.0          # fraction of --n this campaign runs (slow readers)
    timeout_s: float = 20.0


@dataclass
class Result:
    name: str
    inputs: int = 0
    ok: int = 0
    user_errors: int = 0
    internal: int = 0
    hangs: int = 0
    half_written: int = 0
    unnamed: int = 0
    seconds: float = 0.0
    crashes: dict[str, list] = field(default_factory=dict)   # signature -> [count, example]

    @property
    def failures(self) -> int:
        return self.internal + self.hangs + self.half_written + self.unnamed


def signature(exc: BaseException) -> str:
    """`Type @ path:function` of the innermost frame inside tensorforge (not the harness)."""
    if getattr(exc, "sig", None):
        return exc.sig
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(PACKAGE_ROOT)
            and "tools/fuzz" not in Path(f.filename).as_posix()]
    where = ours[-1] if ours else (frames[-1] if frames else None)
    loc = "?" if where is None else \
        f"{_rel(where.filename)}:{where.name}"
    return f"{type(exc).__name__} @ {loc}"


def _rel(path: str) -> str:
    try:
        return Path(path).resolve().relative_to(PACKAGE_ROOT).as_posix()
    except ValueError:
        return Path(path).name


def _files(d: Path | None) -> set[str]:
    if d is None or not d.exists():
        return set()
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def _on_alarm(signum, frame):
    raise Hang()


def run_case(case: Case, timeout_s: float) -> tuple[str, BaseException | None]:
    """('ok' | 'user' | 'internal' | 'hang' | 'written' | 'unnamed', the exception)."""
    before = _files(case.out_dir)
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    outcome, exc = "ok", None
    try:
        try:
            case.run()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except Hang as e:
        outcome, exc = "hang", e
    except TensorforgeError as e:
        outcome, exc = "user", e
        text = str(e)
        if not text.strip() or (case.names and not any(n in text for n in case.names)):
            outcome, exc = "unnamed", Unnamed(f"{type(e).__name__}: {text[:300]!r} names none "
                                              f"of {case.names!r}")
            exc.__traceback__ = e.__traceback__
    except SystemExit as e:     # argparse: a usage error (exit 2) is the user's
        if e.code not in (0, 1, 2):
            outcome, exc = "internal", e
    except Exception as e:
        outcome, exc = "internal", e
    finally:
        signal.signal(signal.SIGALRM, old)
    if outcome == "user":       # a failure must leave nothing behind
        left = _files(case.out_dir) - before
        if left:
            outcome, exc = "written", HalfWritten(f"left behind: {sorted(left)[:5]}")
    return outcome, exc


def run_campaign(campaign: Campaign, n: int, seed: int = 0,
                 progress: Callable[[str], None] | None = None) -> Result:
    """Runs `n * campaign.scale` (at least 1) inputs of `campaign` in a scratch directory."""
    count = max(1, round(n * campaign.scale))
    result = Result(campaign.name)
    work = Path(tempfile.mkdtemp(prefix=f"tensorforge-fuzz-{campaign.name}-"))
    cwd = os.getcwd()
    start = time.perf_counter()
    try:
        os.chdir(work)      # a stray relative write lands here, not in the user's tree
        if campaign.setup is not None:
            campaign.setup(work)
        for i in range(count):
            rng = random.Random(f"{seed}:{campaign.name}:{i}")
            case_dir = work / f"case{i}"
            case_dir.mkdir()
            try:
                case = campaign.make(rng, i, case_dir)
            except Exception as e:      # a harness bug: report it, do not hide it
                case = Case(f"<generator failed: {e!r}>", lambda e=e: (_ for _ in ()).throw(e))
            outcome, exc = run_case(case, campaign.timeout_s)
            result.inputs += 1
            if outcome == "ok":
                result.ok += 1
            elif outcome == "user":
                result.user_errors += 1
            else:
                attr = {"internal": "internal", "hang": "hangs", "written": "half_written",
                        "unnamed": "unnamed"}[outcome]
                setattr(result, attr, getattr(result, attr) + 1)
                sig = ("hang" if outcome == "hang" else
                       f"{outcome}: {signature(exc)}" if outcome != "internal" else
                       signature(exc))
                entry = result.crashes.setdefault(sig, [0, case.describe, repr(exc)[:300]])
                entry[0] += 1
            shutil.rmtree(case_dir, ignore_errors=True)
            if progress and (i + 1) % 100 == 0:
                progress(f"  {campaign.name}: {i + 1}/{count}")
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)
    result.seconds = time.perf_counter() - start
    return result


def get_campaign(name: str) -> Campaign:
    from importlib import import_module

    if name not in CAMPAIGNS:
        raise TensorforgeError(f"unknown fuzz campaign {name!r} (campaigns: "
                               f"{', '.join(CAMPAIGNS)})")
    return import_module(f"{__name__}.{name}").CAMPAIGN


def report(results: list[Result]) -> str:
    lines = [f"{'campaign':<12} {'inputs':>7} {'ok':>6} {'user-err':>8} {'internal':>8} "
             f"{'hangs':>5} {'half-written':>12} {'unnamed':>7} {'seconds':>8}"]
    for r in results:
        lines.append(f"{r.name:<12} {r.inputs:>7} {r.ok:>6} {r.user_errors:>8} {r.internal:>8} "
                     f"{r.hangs:>5} {r.half_written:>12} {r.unnamed:>7} {r.seconds:>8.1f}")
    total = sum(r.failures for r in results)
    lines.append(f"total: {sum(r.inputs for r in results)} inputs, "
                 f"{sum(r.internal for r in results)} internal errors, "
                 f"{sum(r.hangs for r in results)} hangs, "
                 f"{sum(r.half_written for r in results)} half-written outputs, "
                 f"{sum(r.unnamed for r in results)} errors not naming their input")
    if total:
        lines.append("crash signatures:")
        for r in results:
            for sig, (count, example, exc) in sorted(r.crashes.items(), key=lambda x: -x[1][0]):
                lines.append(f"  [{r.name}] {count:>4}x {sig}\n        input: {example[:200]}"
                             f"\n        error: {exc}")
    return "\n".join(lines)
