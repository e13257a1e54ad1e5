// Reads [{text, numScales, mode, resolution, interpolate}] as JSON on stdin; prints, per case, the spans
// js/schedule_rules.js computes, or {error} when the prompt is refused.
import { parsePrompt, resolveTags, stateSpans } from "../../js/schedule_rules.js";

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const out = JSON.parse(input).map((c) => {
    try {
      const tags = resolveTags(parsePrompt(c.text), c.numScales, c.mode, c.resolution);
      return { spans: stateSpans(tags, c.interpolate).map((s) => [s.tMin, s.tMax, s.states]) };
    } catch (err) {
      return { error: err.message, token: err.token ?? null };
    }
  });
  process.stdout.write(JSON.stringify(out));
});
