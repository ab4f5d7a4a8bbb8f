// Check texts with the real parsers of the formats tnx emits: Mermaid (mermaid's own parser),
// Graphviz DOT (Graphviz compiled to WASM) and SARIF (the OASIS SARIF 2.1.0 JSON schema).
//   node check_format.mjs < [{"format": "mermaid" | "dot" | "sarif", "text": "..."}, ...]
// Prints one JSON array: for each input {"ok": true, ...} or {"ok": false, "error": "..."}.
// One process for many texts: loading mermaid and the Graphviz WASM takes about a second.
import { readFileSync } from 'fs';

let mermaid = null;
let graphviz = null;

async function mermaidParse(source) {
  if (mermaid === null) {
    // Mermaid sanitises labels with DOMPurify, which needs a DOM even to parse.
    const { JSDOM } = await import('jsdom');
    const dom = new JSDOM('<!DOCTYPE html><body></body>');
    globalThis.window = dom.window;
    globalThis.document = dom.window.document;
    mermaid = (await import('mermaid')).default;
  }
  const result = await mermaid.parse(source);
  return { diagramType: result.diagramType };
}

async function dotParse(source) {
  if (graphviz === null) {
    const { Graphviz } = await import('@hpcc-js/wasm-graphviz');
    graphviz = await Graphviz.load();
  }
  const layout = JSON.parse(graphviz.layout(source, 'json', 'dot'));
  return { nodes: (layout.objects || []).length, edges: (layout.edges || []).length };
}

let sarifValidate = null;

async function sarifCheck(source) {
  if (sarifValidate === null) {
    const { default: Ajv } = await import('ajv-draft-04');
    const schemaUrl = new URL(
      './node_modules/@microsoft/jest-sarif/lib/schemas/sarif-2.1.0-rtm.5.json', import.meta.url);
    const schema = JSON.parse(readFileSync(schemaUrl, 'utf8'));
    // Formats (uri, date-time) are not checked; the schema's `language` pattern is not valid
    // under the u flag, so patterns compile without it.
    sarifValidate = new Ajv({ allErrors: true, strict: false, validateFormats: false, unicodeRegExp: false })
      .compile(schema);
  }
  const log = JSON.parse(source);
  if (!sarifValidate(log)) {
    throw new Error(sarifValidate.errors
      .map((e) => `${e.instancePath || '/'} ${e.message}`).join('; '));
  }
  return { version: log.version, results: log.runs.reduce((n, r) => n + r.results.length, 0) };
}

const parsers = { mermaid: mermaidParse, dot: dotParse, sarif: sarifCheck };
const results = [];
for (const { format, text } of JSON.parse(readFileSync(0, 'utf8'))) {
  try {
    if (!(format in parsers)) throw new Error(`unknown format ${format}`);
    results.push({ ok: true, ...(await parsers[format](text)) });
  } catch (e) {
    results.push({ ok: false, error: String((e && e.message) || e) });
  }
}
console.log(JSON.stringify(results));
