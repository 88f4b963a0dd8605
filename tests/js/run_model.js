#!/usr/bin/env node
// Runs a TF.js graph model in Node with @tensorflow/tfjs's pure-JS CPU backend (tests only).
//
//   node run_model.js MODEL_DIR INPUTS.json
//   node run_model.js --batch JOBS.json      # JOBS: [[MODEL_DIR, INPUTS.json], ...]
//
// MODEL_DIR holds model.json and its weight shards. INPUTS.json is {name: {shape, dtype, data}}
// with `data` flat in row-major order. Prints {name: {shape, dtype, data}} for every output of
// the model's signature, in signature order, as one JSON object on stdout. Loading goes through
// tf.io.getModelArtifactsForJSON + tf.io.fromMemory, the same parsing the HTTP loader does
// (weights manifest, shard concatenation, uint8/uint16/float16 dequantization).
// --batch runs many models in one process (Node + tfjs start-up costs ~1 s) and prints a JSON
// list with one {outputs} or {error} per job, in job order.
'use strict';

const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

async function loadModel(dir) {
  const modelJSON = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  const artifacts = await tf.io.getModelArtifactsForJSON(modelJSON, async (manifest) => {
    const specs = [];
    const buffers = [];
    for (const group of manifest) {
      specs.push(...group.weights);
      for (const p of group.paths) {
        const b = fs.readFileSync(path.join(dir, p));
        buffers.push(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
      }
    }
    return [specs, tf.io.concatenateArrayBuffers(buffers)];
  });
  return tf.loadGraphModel(tf.io.fromMemory(artifacts));
}

async function runOne(dir, inputsPath) {
  const model = await loadModel(dir);
  const spec = JSON.parse(fs.readFileSync(inputsPath, 'utf8'));
  const inputs = {};
  for (const [name, {shape, dtype, data}] of Object.entries(spec)) {
    // NaN and +-Infinity arrive as strings (JSON has no such numbers).
    inputs[name] = tf.tensor(data.map((v) => (typeof v === 'string' ? Number(v) : v)), shape,
                             dtype);
  }
  const names = model.outputNodes;
  let outs = await model.executeAsync(inputs, names);
  if (!Array.isArray(outs)) outs = [outs];
  const result = {};
  for (let i = 0; i < names.length; i++) {
    const t = outs[i];
    const data = Array.from(await t.data(), (v) => (typeof v === 'number' ? v : Number(v)));
    result[names[i]] = {shape: t.shape, dtype: t.dtype, data};
  }
  tf.dispose([...outs, ...Object.values(inputs)]);
  model.dispose();
  return result;
}

// JSON cannot spell NaN/Infinity: send them as strings the Python side turns back into floats.
const toJSON = (obj) => JSON.stringify(obj, (k, v) =>
  (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v));

async function main() {
  const args = process.argv.slice(2);
  if (args.length !== 2) {
    throw new Error('usage: node run_model.js MODEL_DIR INPUTS.json | --batch JOBS.json');
  }
  // Keep stdout pure JSON: tfjs's console notices (backend hints) go to stderr.
  console.log = (...a) => process.stderr.write(`${a.join(' ')}\n`);
  await tf.setBackend('cpu');
  await tf.ready();
  if (args[0] === '--batch') {
    const jobs = JSON.parse(fs.readFileSync(args[1], 'utf8'));
    const results = [];
    for (const [dir, inputsPath] of jobs) {
      try {
        results.push({outputs: await runOne(dir, inputsPath)});
      } catch (err) {
        results.push({error: String(err && err.stack ? err.stack : err)});
      }
    }
    process.stdout.write(toJSON(results) + '\n');
  } else {
    process.stdout.write(toJSON(await runOne(args[0], args[1])) + '\n');
  }
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
