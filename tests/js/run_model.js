#!/usr/bin/env node
// Runs a TF.js graph model in Node with @tensorflow/tfjs (tests and `--verify` only).
//
//   node run_model.js [--backend auto|wasm|cpu] MODEL_DIR INPUTS.json
//   node run_model.js [--backend auto|wasm|cpu] [--out DIR] --batch JOBS.json   # JOBS: [[MODEL_DIR, INPUTS.json], ...]
//   node run_model.js --serve   # then one line on stdin: {"batch": JOBS.json, "out": DIR, "backend": ...}
//
// Backends: `wasm` (@tensorflow/tfjs-backend-wasm, XNNPACK in WebAssembly, what browsers run
// without a GPU; its .wasm binaries ship in the npm package, loaded from node_modules), `cpu`
// (the pure-JS reference backend), `auto` (the default; TENSORFORGE_TFJS_BACKEND sets it too):
// WASM, and the model again on the CPU backend when WASM fails on it (the WASM backend throws
// for a kernel it lacks instead of falling back per op).
//
// MODEL_DIR holds model.json and its weight shards. INPUTS.json is {name: {shape, dtype, data}}
// with `data` flat in row-major order, or {name: {shape, dtype, file}} with `file` (absolute, or
// relative to INPUTS.json's directory) holding the values as raw little-endian float32, int32
// or uint8 (bool) bytes: Python writes and Node reads those without any text conversion, which
// for an image batch (~10^6 numbers) took the better part of a second as JSON.
// Prints {name: {shape, dtype, data}} for every output of the model's signature, in signature
// order, as one JSON object on stdout. Loading goes through tf.io.getModelArtifactsForJSON +
// tf.io.fromMemory, the same parsing the HTTP loader does (weights manifest, the weight
// shards read as a list of buffers, uint8/uint16/float16 dequantization).
// --batch runs many models in one process (Node + tfjs start-up costs ~1 s) and prints a JSON
// list with one {outputs, backend, seconds} or {error} per job, in job order (`backend`: the
// backend that ran it; `seconds`: load + run; `wasm_error`: why WASM did not, under auto).
// --serve starts Node, loads tfjs and initializes the WASM backend, then waits for one line on
// stdin, {"batch": JOBS.json, "out": DIR or null, "backend": auto|wasm|cpu or null}, and runs
// it as --batch would (end of input without a line: exits quietly). Python starts it before
// the artifacts exist, so its start-up overlaps the conversion.
// With --out DIR (before --batch), each output held as a Float32Array, Int32Array or Uint8Array
// is written to a raw file in DIR and listed as {shape, dtype, file, layout} (layout: float32,
// int32 or uint8, the bytes' own type) instead of inline `data`.
'use strict';

const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

let wasmLoaded = false;
try {
  require('@tensorflow/tfjs-backend-wasm');
  wasmLoaded = true;
} catch (err) {  // an install without the WASM backend: the CPU backend only
  wasmLoaded = false;
}

// The ArrayBuffer holding exactly a Buffer's bytes: its own when the Buffer spans all of it
// (a file read whole past Node's small-buffer pool), else a copy.
function ownBuffer(b) {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength) return b.buffer;
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
}

async function loadModel(dir) {
  const modelJSON = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  const artifacts = await tf.io.getModelArtifactsForJSON(modelJSON, async (manifest) => {
    const specs = [];
    const buffers = [];
    for (const group of manifest) {
      specs.push(...group.weights);
      for (const p of group.paths) {
        buffers.push(ownBuffer(fs.readFileSync(path.join(dir, p))));
      }
    }
    // The shards as a list, not joined into one buffer: what tfjs's HTTP loader hands over
    // (its CompositeArrayBuffer reads each weight across shard boundaries), and a copy of
    // the weights less (ResNet50: 100 MB, ~55 ms).
    return [specs, buffers];
  });
  return tf.loadGraphModel(tf.io.fromMemory(artifacts));
}

// The model last loaded, kept for the next job on the same directory and backend (a
// verification runs each artifact at several input sizes: it is loaded once).
let cached = null;

async function modelFor(dir) {
  const backend = tf.getBackend();
  if (cached && cached.dir === dir && cached.backend === backend) return cached.model;
  releaseModel();
  cached = {dir, backend, model: await loadModel(dir)};
  return cached.model;
}

function releaseModel() {
  if (cached) {
    try {
      cached.model.dispose();
    } catch (err) {  // its backend was switched away from: nothing left to free
    }
    cached = null;
  }
}

// The typed array class of each dtype exchanged as raw bytes (bool as one byte per value),
// and the layout name Python reads raw output bytes by.
const RAW_TYPES = {float32: Float32Array, int32: Int32Array, bool: Uint8Array};
const RAW_LAYOUTS = new Map([[Float32Array, 'float32'], [Int32Array, 'int32'],
                             [Uint8Array, 'uint8']]);

// One input tensor from its spec: raw bytes in `file`, else the JSON list `data`.
function inputTensor({shape, dtype, data, file}, baseDir) {
  if (file !== undefined) {
    const Typed = RAW_TYPES[dtype];
    if (!Typed) throw new Error(`raw input files hold float32, int32 or bool, not ${dtype}`);
    const b = fs.readFileSync(path.resolve(baseDir, file));
    // A copy into a fresh, aligned buffer (a Buffer may start at any byte offset).
    const values = new Typed(b.byteLength / Typed.BYTES_PER_ELEMENT);
    new Uint8Array(values.buffer).set(b);
    return tf.tensor(values, shape, dtype);
  }
  // NaN and +-Infinity arrive as strings (JSON has no such numbers).
  return tf.tensor(data.map((v) => (typeof v === 'string' ? Number(v) : v)), shape, dtype);
}

// `outDir`: where raw output files go (null: outputs inline as JSON lists); `tag` makes their
// names unique per job.
async function runOne(dir, inputsPath, outDir, tag) {
  const model = await modelFor(dir);
  const spec = JSON.parse(fs.readFileSync(inputsPath, 'utf8'));
  const inputs = {};
  for (const [name, s] of Object.entries(spec)) {
    inputs[name] = inputTensor(s, path.dirname(inputsPath));
  }
  const names = model.outputNodes;
  let outs = await model.executeAsync(inputs, names);
  if (!Array.isArray(outs)) outs = [outs];
  const result = {};
  for (let i = 0; i < names.length; i++) {
    const t = outs[i];
    const values = await t.data();
    // The layout of the bytes is the typed array's, which need not match the dtype (the CPU
    // backend can hold a float32 tensor cast from bool as a Uint8Array).
    const layout = RAW_LAYOUTS.get(values.constructor);
    if (outDir !== null && layout !== undefined) {
      const file = path.join(outDir, `${tag}_out${i}.bin`);
      fs.writeFileSync(file, Buffer.from(values.buffer, values.byteOffset, values.byteLength));
      result[names[i]] = {shape: t.shape, dtype: t.dtype, file, layout};
    } else {
      const data = Array.from(values, (v) => (typeof v === 'number' ? v : Number(v)));
      result[names[i]] = {shape: t.shape, dtype: t.dtype, data};
    }
  }
  tf.dispose([...outs, ...Object.values(inputs)]);
  return result;
}

// JSON cannot spell NaN/Infinity: send them as strings the Python side turns back into floats.
const toJSON = (obj) => JSON.stringify(obj, (k, v) =>
  (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v));

const errorText = (err) => String(err && err.stack ? err.stack : err);

async function useBackend(name) {
  if (tf.getBackend() !== name && !(await tf.setBackend(name))) {
    throw new Error(`the ${name} backend failed to initialize`);
  }
  await tf.ready();
}

// One job on `backend` (auto: wasm, then cpu if wasm fails): {outputs, backend, seconds}.
async function runJob(dir, inputsPath, backend, outDir = null, tag = 'job') {
  const order = backend === 'auto' ? (wasmLoaded ? ['wasm', 'cpu'] : ['cpu']) : [backend];
  let wasmError;
  for (let i = 0; i < order.length; i++) {
    const start = process.hrtime.bigint();
    try {
      await useBackend(order[i]);
      const outputs = await runOne(dir, inputsPath, outDir, tag);
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const result = {outputs, backend: order[i], seconds};
      if (wasmError) result.wasm_error = wasmError;
      return result;
    } catch (err) {
      releaseModel();
      if (i === order.length - 1) throw err;
      wasmError = errorText(err).split('\n')[0].slice(0, 300);
    }
  }
  throw new Error('unreachable');
}

const BACKENDS = ['auto', 'wasm', 'cpu'];

// A forced WASM backend needs its package.
function requireInstalled(backend) {
  if (backend === 'wasm' && !wasmLoaded) {
    throw new Error('@tensorflow/tfjs-backend-wasm is not installed (npm ci in tests/js)');
  }
}

// The batch of jobs listed in `jobsPath`, run in order; prints their JSON list on stdout.
async function runBatch(jobsPath, backend, outDir) {
  if (outDir !== null) fs.mkdirSync(outDir, {recursive: true});
  const jobs = JSON.parse(fs.readFileSync(jobsPath, 'utf8'));
  const results = [];
  for (const [dir, inputsPath] of jobs) {
    try {
      results.push(await runJob(dir, inputsPath, backend, outDir, `job${results.length}`));
    } catch (err) {
      results.push({error: errorText(err)});
    }
  }
  process.stdout.write(toJSON(results) + '\n');
}

// The first line of stdin ('' when it ends without one).
function firstLine() {
  return new Promise((resolve) => {
    let text = '';
    const done = () => {
      process.stdin.off('data', onData);
      process.stdin.off('end', done);
      process.stdin.destroy();   // nothing more is read: let Node exit when the jobs are done
      resolve(text.split('\n')[0]);
    };
    const onData = (chunk) => {
      text += chunk;
      if (text.includes('\n')) done();
    };
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', onData);
    process.stdin.on('end', done);
  });
}

async function serve() {
  console.log = (...a) => process.stderr.write(`${a.join(' ')}\n`);
  if (wasmLoaded && process.env.TENSORFORGE_TFJS_BACKEND !== 'cpu') {
    try {
      await useBackend('wasm');   // compiles the WASM module while Python still converts
    } catch (err) {  // reported when a job asks for it
    }
  }
  const line = await firstLine();
  if (!line.trim()) return;
  const request = JSON.parse(line);
  const backend = request.backend || process.env.TENSORFORGE_TFJS_BACKEND || 'auto';
  if (!BACKENDS.includes(backend)) throw new Error(`unknown backend ${backend}`);
  requireInstalled(backend);
  await runBatch(request.batch, backend, request.out === undefined ? null : request.out);
}

async function main() {
  let args = process.argv.slice(2);
  if (args.length === 1 && args[0] === '--serve') return serve();
  let backend = process.env.TENSORFORGE_TFJS_BACKEND || 'auto';
  if (args[0] === '--backend') {
    backend = args[1];
    args = args.slice(2);
  }
  let outDir = null;
  if (args[0] === '--out' && args[2] === '--batch') {
    outDir = args[1];
    args = args.slice(2);
  }
  if (args.length !== 2 || !BACKENDS.includes(backend)) {
    throw new Error('usage: node run_model.js [--backend auto|wasm|cpu] MODEL_DIR INPUTS.json ' +
                    '| [--out DIR] --batch JOBS.json');
  }
  requireInstalled(backend);
  // Keep stdout pure JSON: tfjs's console notices (backend hints) go to stderr.
  console.log = (...a) => process.stderr.write(`${a.join(' ')}\n`);
  if (args[0] === '--batch') {
    await runBatch(args[1], backend, outDir);
  } else {
    process.stdout.write(toJSON((await runJob(args[0], args[1], backend)).outputs) + '\n');
  }
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
