// The tag grammar and docs/method.md's schedule rules, for drawing on the node while the user types.
// Mirrors mrti/prompt_syntax.py and mrti/schedule.py; tests/unit/test_js_rules.py checks the two agree on
// a table of prompts. Exact arithmetic (BigInt) so that bucket edges fall where Python puts them.

export const NUM_TIMESTEPS = 1000;
export const MODES = ["fixed", "semi", "fully"];
const OPENERS = { "|": ["fixed", "|"], "(": ["semi", ")"], "[": ["fully", "]"] };
const MAX_NUMBER_LENGTH = 32;

export class TagSyntaxError extends Error {
  constructor(token, position, problem) {
    super(`invalid concept tag '${token}' at character ${position}: ${problem}`);
    this.token = token;
    this.position = position;
  }
}

const isNameStart = (c) => /^[A-Za-z0-9_]$/.test(c);
const isNameChar = (c) => isNameStart(c) || c === "." || c === "-";
const isSpace = (c) => /\s/.test(c);

// "3" -> {kind: "index", index: 3}; "0.8" -> {kind: "time", digits: "0.8"} (exact decimal kept as text)
export function parseResolution(text) {
  const value = String(text).trim();
  if (value.length > MAX_NUMBER_LENGTH) throw new Error(`resolution '${value}' is too long to be a number`);
  if (/^[0-9]+$/.test(value)) return { kind: "index", index: Number(value) };
  if (/^([0-9]+\.[0-9]*|\.[0-9]+)$/.test(value)) return { kind: "time", digits: value };
  throw new Error(`resolution '${text}' is neither a bucket index nor a diffusion time`);
}

// A decimal as an exact fraction [numerator, denominator] of BigInts.
function decimalFraction(digits) {
  const [whole, frac = ""] = digits.split(".");
  return [BigInt((whole || "0") + frac), 10n ** BigInt(frac.length)];
}

function scanTag(text, start) {
  let pos = start + 1;
  while (pos < text.length && isNameChar(text[pos])) pos++;
  const name = text.slice(start + 1, pos);
  const fail = (at, problem) => new TagSyntaxError(text.slice(start, Math.min(at + 1, text.length)), start, problem);
  const check = (at, expected) => {
    if (at >= text.length) throw fail(at, `unterminated tag: expected ${expected}`);
    if (isSpace(text[at])) throw fail(at, "whitespace is not allowed inside a tag");
  };
  check(pos, "'>', '|', '(' or '['");
  if (text[pos] === ">") return { name, mode: null, resolution: null, text: text.slice(start, pos + 1), start, end: pos + 1 };
  const opener = OPENERS[text[pos]];
  if (!opener) throw fail(pos, `unexpected '${text[pos]}' after concept name '${name}'`);
  const [mode, closer] = opener;
  const valueStart = ++pos;
  while (pos < text.length && /[0-9.]/.test(text[pos])) pos++;
  const value = text.slice(valueStart, pos);
  check(pos, `'${closer}'`);
  if (text[pos] !== closer) throw fail(pos, `expected a bucket index or a diffusion time followed by '${closer}'`);
  if (!value) throw fail(pos, "missing the resolution");
  let resolution;
  try {
    resolution = parseResolution(value);
  } catch (err) {
    throw fail(pos, err.message);
  }
  pos++;
  check(pos, "'>'");
  if (text[pos] !== ">") throw fail(pos, `expected '>' after '${closer}'`);
  return { name, mode, resolution, text: text.slice(start, pos + 1), start, end: pos + 1 };
}

// Plain-text segments (strings) and tags, as mrti.prompt_syntax.parse_prompt.
export function parsePrompt(text) {
  const segments = [];
  let plain = "";
  let pos = 0;
  while (pos < text.length) {
    const c = text[pos];
    if (c === "\\" && text[pos + 1] === "<") {
      plain += "<";
      pos += 2;
    } else if (c === "<" && pos + 1 < text.length && isNameStart(text[pos + 1])) {
      if (plain) segments.push(plain);
      plain = "";
      const tag = scanTag(text, pos);
      segments.push(tag);
      pos = tag.end;
    } else {
      plain += c;
      pos++;
    }
  }
  if (plain) segments.push(plain);
  return segments;
}

export function resolveTags(segments, numScalesByName, defaultMode, defaultResolution) {
  return segments.filter((s) => typeof s !== "string").map((tag) => {
    const numScales = numScalesByName[tag.name];
    if (numScales === undefined) {
      const known = Object.keys(numScalesByName).sort();
      throw new Error(`unknown concept '${tag.name}'; ${known.length ? "known concepts: " + known.join(", ") : "no concepts are loaded"}`);
    }
    const resolution = tag.resolution ?? parseResolution(defaultResolution);
    if (resolution.kind === "index" && !(resolution.index < numScales)) {
      throw new Error(`${tag.text}: bucket index ${resolution.index} is out of range 0-${numScales - 1}`);
    }
    if (resolution.kind === "time") {
      const [num, den] = decimalFraction(resolution.digits);
      if (num > den) throw new Error(`${tag.text}: diffusion time ${resolution.digits} is above 1`);
    }
    return { name: tag.name, mode: tag.mode ?? defaultMode, resolution, numScales, text: tag.text };
  });
}

export function bucketOf(t, n) {
  return Math.min(Math.max(Math.floor((t * n) / NUM_TIMESTEPS), 0), n - 1);
}

function embeddingForTime(digits, n, interpolate) {
  const [num, den] = decimalFraction(digits);
  const N = BigInt(n);
  if (!interpolate) {
    const bucket = Number((num * N) / den);
    return { kind: "e", index: Math.min(Math.max(bucket, 0), n - 1) };
  }
  // Bucket i is centred on tau = (i + 0.5) / n: position = tau * n - 0.5 = (2 num n - den) / (2 den).
  const pNum = 2n * num * N - den;
  const pDen = 2n * den;
  if (pNum <= 0n) return { kind: "e", index: 0 };
  if (pNum >= BigInt(n - 1) * pDen) return { kind: "e", index: n - 1 };
  const lower = Number(pNum / pDen);
  const rest = pNum - BigInt(lower) * pDen;
  if (rest === 0n) return { kind: "e", index: lower };
  return { kind: "blend", lower, upper: lower + 1, weight: Number(rest) / Number(pDen) };
}

// The state of a resolved tag's token at integer timestep t (docs/method.md's table).
export function stateAt(tag, t, interpolate = false) {
  const n = tag.numScales;
  const b = bucketOf(t, n);
  const r = tag.resolution;
  if (r.kind === "index") {
    if (tag.mode === "fixed") return { kind: "e", index: r.index };
    if (b > r.index) return { kind: "e", index: b };
    return tag.mode === "fully" ? { kind: "e", index: r.index } : { kind: "zero" };
  }
  if (tag.mode === "fixed") return embeddingForTime(r.digits, n, interpolate);
  const [num, den] = decimalFraction(r.digits);
  if (BigInt(t) * den >= 1000n * num) return { kind: "e", index: b };
  return tag.mode === "fully" ? embeddingForTime(r.digits, n, interpolate) : { kind: "zero" };
}

const sameState = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// Maximal runs of timesteps with one state tuple, from t = 999 (noise) down to t = 0 (clean).
export function stateSpans(tags, interpolate = false) {
  const spans = [];
  let current = null;
  for (let t = NUM_TIMESTEPS - 1; t >= 0; t--) {
    const states = tags.map((tag) => stateAt(tag, t, interpolate));
    if (current && sameState(current.states, states)) {
      current.tMin = t;
    } else {
      current = { tMin: t, tMax: t, states };
      spans.push(current);
    }
  }
  return spans;
}
