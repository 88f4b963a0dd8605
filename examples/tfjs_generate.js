#!/usr/bin/env node
// Greedy generation with a tensorforge TF.js language-model artifact, in Node with
// @tensorflow/tfjs (pure JS CPU backend), the same loop as tensorforge.generate and Keras:
//
//   tensorforge.convert_lm(causal_lm, output="lm_tfjs", max_sequence_length=48, target="tfjs")
//   node examples/tfjs_generate.js lm_tfjs 5,17,3,42 32      # prints the new ids as JSON
//
// ARTIFACT holds prefill/model.json and decode/model.json (each with its weight shards).
// prefill(token_ids [1, N]) -> {logits, caches}; decode(token [1, 1], index [], caches) ->
// {logits, caches}, where the caches are the key/value tensors of every layer (`cache_k_0`,
// `cache_v_0`, ...: whatever the decode step takes besides `token` and `index`). They are
// handed from one step to the next as tensors and never leave the backend. Run from a directory where `require('@tensorflow/tfjs')` resolves (or
// set NODE_PATH, e.g. NODE_PATH=tests/js/node_modules).
'use strict';

const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

// Loads a graph model from disk: model.json plus its shards, parsed as the HTTP loader would.
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
    // The shards as a list, as the HTTP loader hands them over: no copy of all the weights
    // in one buffer (which a model past V8's largest ArrayBuffer could not have).
    return [specs, buffers];
  });
  return tf.loadGraphModel(tf.io.fromMemory(artifacts));
}

// First index of the largest value: the same tie-break as NumPy's argmax (and Keras's greedy).
function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

// The signature name of a graph-model tensor ("cache_k_0:0" -> "cache_k_0").
const signatureName = (t) => t.name.split(':')[0];

// Runs a step, returning {name: tensor} for `names`. The steps have no control flow, so the
// synchronous `execute` suffices; a model whose graph needs `executeAsync` (a
// tf.while_loop in its call) makes it throw first.
async function run(model, inputs, names) {
  let out;
  try {
    out = model.execute(inputs, names);
  } catch (err) {
    out = await model.executeAsync(inputs, names);
  }
  return Object.fromEntries(names.map((name, i) => [name, out[i]]));
}

async function generate(artifact, prompt, maxNewTokens) {
  const prefill = await loadModel(path.join(artifact, 'prefill'));
  const decode = await loadModel(path.join(artifact, 'decode'));
  const n = prefill.inputs.find((t) => t.name.startsWith('token_ids')).shape[1];
  if (prompt.length < 1 || prompt.length + maxNewTokens > n) {
    throw new Error(`a prompt of ${prompt.length} tokens plus ${maxNewTokens} new ones does ` +
                    `not fit this artifact's max_sequence_length ${n}`);
  }
  const ids = new Int32Array(n);
  ids.set(prompt);
  // Tensors are asked for by their signature names, which stay the same in every artifact.
  const cacheNames = decode.inputs.map(signatureName)
    .filter((name) => name !== 'token' && name !== 'index');
  const tokenIds = tf.tensor(ids, [1, n], 'int32');
  const prefillInputs = {token_ids: tokenIds};
  // Models with a recurrent state also take the prompt's length.
  if (prefill.inputs.some((t) => signatureName(t) === 'prompt_length')) {
    prefillInputs.prompt_length = tf.scalar(prompt.length, 'int32');
  }
  let cache = await run(prefill, prefillInputs, ['logits', ...cacheNames]);
  tf.dispose([...Object.values(prefillInputs), cache.logits]);
  delete cache.logits;
  for (let index = prompt.length; index < prompt.length + maxNewTokens; index++) {
    const token = tf.tensor([ids[index - 1]], [1, 1], 'int32');
    const at = tf.scalar(index - 1, 'int32');
    const out = await run(decode, {token, index: at, ...cache}, ['logits', ...cacheNames]);
    tf.dispose([token, at, ...Object.values(cache)]);
    const row = await out.logits.data();   // [1, 1, vocab]
    ids[index] = argmax(row);
    out.logits.dispose();
    delete out.logits;
    cache = out;
  }
  tf.dispose(Object.values(cache));
  prefill.dispose();
  decode.dispose();
  return Array.from(ids.slice(prompt.length, prompt.length + maxNewTokens));
}

async function main() {
  const [artifact, promptText, count] = process.argv.slice(2);
  if (!artifact || !promptText || !count) {
    console.error('usage: node tfjs_generate.js ARTIFACT_DIR PROMPT_IDS(comma-separated) N');
    process.exit(2);
  }
  const prompt = promptText.split(',').map((v) => parseInt(v, 10));
  console.log(JSON.stringify(await generate(artifact, prompt, parseInt(count, 10))));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
