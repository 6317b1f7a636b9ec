// JavaScript peer of tokenizer_bench: @lenml/tokenizers (a port of the Hugging Face tokenizers
// to JavaScript) on the same corpus. Usage: node peer.mjs TOKENIZER_DIR CORPUS_FILE SAMPLE_EVERY
// Prints one JSON object: {"seconds", "cpu_seconds", "bytes", "tokens", "samples": {line_index: ids}}.
import { readFileSync } from "node:fs";
import { TokenizerLoader } from "@lenml/tokenizers";

const [dir, corpusPath, sampleEveryText] = process.argv.slice(2);
const sampleEvery = Number(sampleEveryText || 1000);
const tokenizer = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(readFileSync(`${dir}/tokenizer.json`, "utf8")),
  tokenizerConfig: JSON.parse(readFileSync(`${dir}/tokenizer_config.json`, "utf8")),
});
const lines = readFileSync(corpusPath, "utf8").split("\n");
if (lines.length && lines[lines.length - 1] === "") lines.pop();
const bytes = lines.reduce((n, line) => n + Buffer.byteLength(line, "utf8"), 0);

const samples = {};
let tokens = 0;
const start = process.hrtime.bigint();
const cpuStart = process.cpuUsage();
for (let i = 0; i < lines.length; i++) {
  const ids = tokenizer.encode(lines[i], { add_special_tokens: false });
  tokens += ids.length;
  if (i % sampleEvery === 0) samples[i] = ids;
}
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
const cpu = process.cpuUsage(cpuStart);
const cpu_seconds = (cpu.user + cpu.system) / 1e6;
process.stdout.write(JSON.stringify({ seconds, cpu_seconds, bytes, tokens, samples }) + "\n");
