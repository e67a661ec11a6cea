// Reads the byte-exact examples out of docs/protocol.md: the same ```wire and
// ```wire-invalid blocks tests/test_wire.py checks against the Python code.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const PROTOCOL_MD = fileURLToPath(new URL("../../docs/protocol.md", import.meta.url));

function hex(text, line) {
  const pairs = text.trim().split(/\s+/);
  if (!pairs.every((p) => /^[0-9a-f]{2}$/.test(p))) throw new Error(`protocol.md line ${line}: bad hex`);
  return Uint8Array.from(pairs.map((p) => parseInt(p, 16)));
}

/** Parse a Python literal as the examples write it (None, True, b"..", floats, lists, dicts). */
export function pythonLiteral(text) {
  let i = 0;
  const ws = () => {
    while (/\s/.test(text[i] ?? "")) i++;
  };
  const expect = (c) => {
    ws();
    if (text[i] !== c) throw new Error(`expected ${c} at ${i} in ${text}`);
    i++;
  };
  function string() {
    const quote = text[i++];
    const bytes = [];
    while (text[i] !== quote) {
      if (i >= text.length) throw new Error(`unterminated string in ${text}`);
      let c = text[i++];
      if (c === "\\") {
        const e = text[i++];
        if (e === "x") {
          bytes.push(parseInt(text.slice(i, i + 2), 16));
          i += 2;
          continue;
        }
        c = { n: "\n", t: "\t", "\\": "\\", '"': '"', "'": "'" }[e];
        if (c === undefined) throw new Error(`unsupported escape \\${e}`);
      }
      for (const b of new TextEncoder().encode(c)) bytes.push(b);
    }
    i++;
    return Uint8Array.from(bytes);
  }
  function value() {
    ws();
    const c = text[i];
    if (c === "[") {
      i++;
      const items = [];
      ws();
      while (text[i] !== "]") {
        items.push(value());
        ws();
        if (text[i] === ",") i++;
        ws();
      }
      i++;
      return items;
    }
    if (c === "{") {
      i++;
      const map = {};
      ws();
      while (text[i] !== "}") {
        const key = value();
        expect(":");
        map[key] = value();
        ws();
        if (text[i] === ",") i++;
        ws();
      }
      i++;
      return map;
    }
    if (c === '"' || c === "'") return new TextDecoder().decode(string());
    if (c === "b" && (text[i + 1] === '"' || text[i + 1] === "'")) {
      i++;
      return string();
    }
    const word = /^(None|True|False|-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)/.exec(text.slice(i));
    if (!word) throw new Error(`cannot parse ${text.slice(i)}`);
    i += word[0].length;
    if (word[0] === "None") return null;
    if (word[0] === "True") return true;
    if (word[0] === "False") return false;
    return Number(word[0]);
  }
  const result = value();
  ws();
  if (i !== text.length) throw new Error(`trailing text in ${text}`);
  return result;
}

/** { frames: [{line, arrays, literals, payload}], invalid: [{line, payload, why}] } */
export function protocolExamples(text = readFileSync(PROTOCOL_MD, "utf8")) {
  const frames = [];
  const invalid = [];
  const block = /^```(wire|wire-invalid)[ \t]*\n([\s\S]*?)^```[ \t]*$/gm;
  for (const match of text.matchAll(block)) {
    const firstLine = text.slice(0, match.index).split("\n").length + 1;
    const lines = match[2]
      .split("\n")
      .map((raw, offset) => [firstLine + offset, raw.trim()])
      .filter(([, raw]) => raw);
    if (match[1] === "wire") {
      const msgs = lines.filter(([, l]) => l.startsWith("msg:"));
      const hexes = lines.filter(([, l]) => l.startsWith("hex:"));
      if (hexes.length !== 1 || msgs.length === 0) throw new Error(`protocol.md line ${firstLine}: malformed wire block`);
      frames.push({
        line: firstLine,
        literals: msgs.map(([, l]) => l.slice(4).trim()),
        arrays: msgs.map(([, l]) => pythonLiteral(l.slice(4).trim())),
        payload: hex(hexes[0][1].slice(4), hexes[0][0]),
      });
    } else {
      for (let k = 0; k < lines.length; k += 2) {
        const [line, h] = lines[k];
        const [, why] = lines[k + 1];
        if (!h.startsWith("hex:") || !why.startsWith("why:")) throw new Error(`protocol.md line ${line}: hex/why pairs wanted`);
        invalid.push({ line, payload: hex(h.slice(4), line), why: why.slice(4).trim() });
      }
    }
  }
  return { frames, invalid };
}
