// Tokenize .tnx files with VS Code's own TextMate engine (vscode-textmate +
// vscode-oniguruma) and print, per file, every token as
// [line, start, end, text, scopes] (0-based line and columns) in JSON.
// Usage: node tokenize.mjs GRAMMAR FILE...
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import oniguruma from "vscode-oniguruma";
import textmate from "vscode-textmate";

const require = createRequire(import.meta.url);
const [grammarPath, ...files] = process.argv.slice(2);
const wasm = readFileSync(require.resolve("vscode-oniguruma/release/onig.wasm"));
await oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));

const registry = new textmate.Registry({
  onigLib: Promise.resolve({
    createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
    createOnigString: (text) => new oniguruma.OnigString(text),
  }),
  loadGrammar: async () =>
    textmate.parseRawGrammar(readFileSync(grammarPath, "utf8"), grammarPath),
});
const grammar = await registry.loadGrammar("source.tnx");

const result = {};
for (const file of files) {
  const tokens = [];
  let stack = textmate.INITIAL;
  readFileSync(file, "utf8").split("\n").forEach((line, index) => {
    const found = grammar.tokenizeLine(line, stack);
    for (const token of found.tokens) {
      const end = Math.min(token.endIndex, line.length);
      if (end > token.startIndex) {
        tokens.push([index, token.startIndex, end, line.slice(token.startIndex, end), token.scopes]);
      }
    }
    stack = found.ruleStack;
  });
  result[file] = tokens;
}
process.stdout.write(JSON.stringify(result));
