"""Runs TF.js graph models in Node.js with @tensorflow/tfjs, through the harness in tests/js
(`run_model.js`, dependencies pinned by its package-lock.json).

The harness runs each model on the WASM backend (@tensorflow/tfjs-backend-wasm: XNNPACK
compiled to WebAssembly, what browsers without WebGL/WebGPU run; 2-3x faster than the pure-JS
CPU backend on convolutional models) and reruns it on the CPU backend when WASM fails on it
(WASM throws for a kernel it lacks rather than falling back per op). `backend=` (or the
environment variable TENSORFORGE_TFJS_BACKEND) forces "wasm" or "cpu".

Used by `--verify` for the tfjs target and by the tests. `make test` runs `npm ci` there; when
the harness is not installed yet, `ensure_harness` installs it from the lock file."""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from ..ir.errors import ConversionError

JS_DIR = Path(__file__).resolve().parent.parent / "tests" / "js"


def _install_current() -> bool:
    """node_modules holds exactly what package-lock.json pins (npm's hidden lockfile matches),
    so `npm ci` would only reinstall the same files."""
    hidden = JS_DIR / "node_modules" / ".package-lock.json"
    if not hidden.exists():
        return False
    want = json.loads((JS_DIR / "package-lock.json").read_text())["packages"]
    want.pop("", None)
    return json.loads(hidden.read_text()).get("packages") == want


def ensure_harness(force: bool = False) -> None:
    """Makes sure node, npm and the pinned @tensorflow/tfjs are available."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        raise ConversionError(f"running TF.js models needs {' and '.join(missing)} on PATH")
    if force or not _install_current():
        proc = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                              cwd=JS_DIR, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise ConversionError(f"npm ci failed in {JS_DIR}: {proc.stderr.strip()[-500:]}")


# The tfjs dtype each NumPy kind is fed as, and the raw little-endian layout of its values in
# the files exchanged with the harness (tfjs holds bool as one byte per value).
_RAW = {"bool": np.dtype("u1"), "int32": np.dtype("<i4"), "float32": np.dtype("<f4")}


def _js_dtype(dtype: np.dtype) -> str:
    if dtype == np.bool_:
        return "bool"
    return "int32" if dtype.kind in "iu" else "float32"


def _write_raw(a: np.ndarray, path: Path) -> dict:
    """Writes `a` as the raw bytes of its tfjs dtype (float32, int32 or bool: what tf.tensor
    makes of it anyway) and returns its spec for the harness. Binary, not a JSON list: an
    image batch of ~10^6 values took ~0.3 s to print as JSON here and as long to parse in
    Node, and NaN/Infinity need no spelling."""
    js = _js_dtype(a.dtype)
    np.ascontiguousarray(a, _RAW[js]).tofile(path)
    return {"shape": list(a.shape), "dtype": js, "file": str(path)}


# The layouts of raw output files (the typed array tfjs held the values in, which need not be
# the dtype's own: the CPU backend can keep a float32 cast of a bool tensor as bytes).
_LAYOUTS = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4"), "uint8": np.dtype("u1")}
_OUT_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}


def _read_output(o: dict) -> np.ndarray:
    """One harness output: a raw file ({shape, dtype, file, layout}), as its tfjs dtype, or
    an inline JSON list (other typed arrays), NaN/Infinity there as strings (JSON has no such
    numbers)."""
    if "file" in o:
        a = np.fromfile(o["file"], _LAYOUTS[o["layout"]])
        want = _OUT_DTYPES.get(o["dtype"])
        return (a.astype(want) if want is not None else a).reshape(o["shape"])
    return np.asarray([float(v) if isinstance(v, str) else v
                       for v in o["data"]]).reshape(o["shape"])


class _WarmNode:
    """A Node process started with `--serve`: tfjs loaded and the WASM backend initialized
    while it waits on stdin for the jobs of one NodeRun (`warm_node`)."""

    def __init__(self):
        ensure_harness()
        self.tmp = tempfile.TemporaryDirectory()
        workdir = Path(self.tmp.name)
        self.stdout_path, self.stderr_path = workdir / "stdout.json", workdir / "stderr.txt"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(["node", str(JS_DIR / "run_model.js"), "--serve"],
                                         stdin=subprocess.PIPE, stdout=out, stderr=err)

    def send(self, jobs_path: Path, out_dir: Path, backend: str | None) -> bool:
        """Hands the process its jobs; False when it has already died (start a fresh one)."""
        # The backend as a cold start would choose it now (the environment may have changed
        # since this process started).
        backend = backend or os.environ.get("TENSORFORGE_TFJS_BACKEND") or None
        line = json.dumps({"batch": str(jobs_path), "out": str(out_dir), "backend": backend})
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.close()
            return True
        except OSError:     # BrokenPipeError: it exited (an install problem, a kill)
            self.close()
            return False

    def close(self) -> None:
        """Stops the process if it still runs and removes its files."""
        try:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
        finally:
            self.tmp.cleanup()


class _Slot:
    """What a `warm_node` block holds: its waiting process until a NodeRun takes it, or the
    error that kept one from starting."""

    def __init__(self):
        self.node: _WarmNode | None = None
        self.failure: Exception | None = None


# The innermost warm_node block of this thread (a context variable: a NodeRun on another
# thread, or outside any block, starts its own process).
_slot: contextvars.ContextVar[_Slot | None] = contextvars.ContextVar("tensorforge_warm_node",
                                                                     default=None)


@contextlib.contextmanager
def warm_node():
    """Within this block the next NodeRun of this thread takes a Node process started on
    entry, so that Node's start-up (~0.25 s: tfjs and the WASM module) overlaps the caller's
    work (a conversion that will verify its TF.js artifact). One left untaken is stopped on
    exit. Inside another block, that block's process serves (none is started). When the
    harness is missing (no node, a failed `npm ci`), the runs in the block report that error
    without trying again."""
    if _slot.get() is not None:
        yield
        return
    slot = _Slot()
    try:
        slot.node = _WarmNode()
    except Exception as e:
        slot.failure = e
    token = _slot.set(slot)
    try:
        yield
    finally:
        _slot.reset(token)
        if slot.node is not None:   # nobody took it
            slot.node.close()


def _take_warm() -> _WarmNode | None:
    slot = _slot.get()
    if slot is None:
        return None
    node, slot.node = slot.node, None
    return node


def _harness_failure() -> ConversionError | None:
    """Why this thread's warm_node block could not start Node (the harness is missing or
    failed to install), else None."""
    slot = _slot.get()
    failure = slot.failure if slot is not None else None
    return failure if isinstance(failure, ConversionError) else None


class NodeRun:
    """[(model dir, {input name: array})] running in one Node process started in the
    background (a model directory given by consecutive jobs is loaded once); `results()`
    waits for it. Its output goes to files in `workdir` (a temporary directory when None),
    never to a pipe that could fill and stall it."""

    def __init__(self, jobs, workdir: Path | None = None, *, backend: str | None = None):
        self._tmp = tempfile.TemporaryDirectory() if workdir is None else None
        workdir = Path(self._tmp.name) if workdir is None else workdir
        workdir.mkdir(parents=True, exist_ok=True)
        listing = []
        for i, (model_dir, inputs) in enumerate(jobs):
            path = workdir / f"inputs{i}.json"
            path.write_text(json.dumps({
                name: _write_raw(np.asarray(a), workdir / f"inputs{i}_{k}.bin")
                for k, (name, a) in enumerate(inputs.items())}))
            listing.append([str(model_dir), str(path)])
        jobs_path = workdir / "jobs.json"
        jobs_path.write_text(json.dumps(listing))
        self._stdout_path, self._stderr_path = workdir / "stdout.json", workdir / "stderr.txt"
        self.seconds: float | None = None   # wall time, start to the results written
        self._warm = _take_warm()
        self.started = time.time()
        if self._warm is not None and self._warm.send(jobs_path, workdir / "outputs", backend):
            # Already running (warm_node): its output files are its own.
            self._proc = self._warm.proc
            self._stdout_path, self._stderr_path = self._warm.stdout_path, \
                self._warm.stderr_path
            return
        self._warm = None
        chosen = ["--backend", backend] if backend else []
        with open(self._stdout_path, "wb") as out, open(self._stderr_path, "wb") as err:
            self._proc = subprocess.Popen(["node", str(JS_DIR / "run_model.js"), *chosen,
                                           "--out", str(workdir / "outputs"),
                                           "--batch", str(jobs_path)], stdout=out, stderr=err)

    def results(self, details: list | None = None, timeout: float = 600) -> list:
        """Per job a dict of output arrays, or the error string the harness reported.
        `details`, a list, receives per job {"backend": the tfjs backend that ran it,
        "seconds": its load + run time} ({} for a failed job)."""
        try:
            try:
                code = self._proc.wait(timeout=max(1.0, timeout - (time.time() -
                                                                  self.started)))
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
                raise ConversionError(f"the TF.js harness took over {timeout:g} s") from None
            # Finished at the last write of its output (the caller may have been busy since).
            self.seconds = max(0.0, self._stdout_path.stat().st_mtime - self.started)
            stdout = self._stdout_path.read_text()
            if code != 0 or not stdout.strip():
                stderr = self._stderr_path.read_text(errors="replace")
                raise ConversionError(f"the TF.js harness failed (exit {code}"
                                      f"{', no results' if code == 0 else ''}): "
                                      f"{stderr.strip()[-1000:]}")
            return _parse(json.loads(stdout), details)
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        try:
            if self._tmp is not None:
                self._tmp.cleanup()
        finally:
            if self._warm is not None:
                self._warm.close()     # its process has ended: this removes its files

    def join(self, timeout: float = 600) -> None:
        """Waits until the Node process has exited, or `timeout` seconds from its start have
        passed (`results`, with the same limit, then stops it), without reading its
        results."""
        try:
            self._proc.wait(timeout=max(0.0, timeout - (time.time() - self.started)))
        except subprocess.TimeoutExpired:
            pass

    def cancel(self) -> None:
        """Stops the Node process (its results are no longer wanted: the conversion failed)
        and removes its temporary files."""
        try:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
        finally:
            self._cleanup()


def _parse(harness_results: list, details: list | None) -> list:
    results = []
    for r in harness_results:
        if details is not None:
            details.append({k: r[k] for k in ("backend", "seconds", "wasm_error") if k in r})
        if "error" in r:
            results.append(r["error"])
            continue
        results.append({name: _read_output(o) for name, o in r["outputs"].items()})
    return results


def run_jobs(jobs, workdir: Path, *, backend: str | None = None,
             details: list | None = None) -> list:
    """Runs [(model dir, {input name: array})] in one Node process and waits for it; returns
    per job a dict of output arrays, or the error string the harness reported (`details`:
    see NodeRun.results)."""
    return NodeRun(jobs, workdir, backend=backend).results(details)


def run_in_node(model_dir: Path, inputs: dict[str, np.ndarray], names: list[str], *,
                backend: str | None = None) -> list[np.ndarray]:
    """Runs one TF.js model on named inputs; returns its outputs in `names` order."""
    [result] = start_feeds_in_node(model_dir, [inputs], names, backend=backend).wait()
    if isinstance(result, Exception):
        raise result
    return result


class FeedsRun:
    """One TF.js model running on several feeds in a background Node process (loaded once);
    `wait()` returns per feed its outputs in `names` order, or the ConversionError saying why
    it failed, and fills `details` (per feed: backend, seconds) and `seconds` (the wall time
    of the Node process)."""

    def __init__(self, model_dir: Path, feeds, names: list[str], backend: str | None = None):
        failure = _harness_failure()
        if failure is not None:     # found missing when the block began: not installed again
            raise failure
        ensure_harness()
        self.model_dir, self.names = model_dir, names
        self.details: list[dict] = []
        self.seconds: float | None = None
        self._run = NodeRun([(model_dir, feed) for feed in feeds], backend=backend)

    def wait(self) -> list:
        results = self._run.results(self.details)
        self.seconds = self._run.seconds
        return [ConversionError(f"TF.js model {self.model_dir} failed in Node: {r}")
                if isinstance(r, str) else [r[n] for n in self.names] for r in results]

    def cancel(self) -> None:
        self._run.cancel()

    def join(self) -> None:
        self._run.join()


def start_feeds_in_node(model_dir: Path, feeds: list[dict[str, np.ndarray]], names: list[str],
                        *, backend: str | None = None) -> FeedsRun:
    """Starts one TF.js model on each of `feeds` in a background Node process; see FeedsRun."""
    return FeedsRun(model_dir, feeds, names, backend)
