// Named code blocks of docs/*.md (```lang name), as tests/_docs.py reads them.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export function namedBlocks(relativePath) {
  const text = readFileSync(fileURLToPath(new URL(`../../${relativePath}`, import.meta.url)), "utf8");
  const blocks = {};
  for (const match of text.matchAll(/^```(\w+)[ \t]*([\w.-]*)[ \t]*\n([\s\S]*?)^```[ \t]*$/gm)) {
    blocks[match[2]] = { language: match[1], code: match[3] };
  }
  return blocks;
}
