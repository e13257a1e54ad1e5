"""The front end's schedule strip (js/schedule_rules.js) follows the same rules as the Python core."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mrti.errors import MrtiError, PromptSyntaxError
from mrti.prompt_syntax import Mode, parse_prompt, parse_resolution, resolve_tags
from mrti.schedule import Blend, Embedding, Zero, state_spans

DUMP = Path(__file__).resolve().parents[1] / "js" / "dump_spans.mjs"

CASES = [
    ("a painting of a dog in the style of <jane(3)>", {"jane": 10}, "fully", "0", False),
    ("<jane[4]> and <jane|7|>", {"jane": 10}, "fully", "0", False),
    ("<jane>", {"jane": 10}, "semi", "5", False),
    ("<jane>", {"jane": 10}, "fixed", "0.35", False),
    ("(a <jane(0.8)> dog:1.2), embedding:foo", {"jane": 10}, "fully", "0", False),
    ("<jane[0.25]>", {"jane": 10}, "fully", "0", True),
    ("<jane[0.25]>", {"jane": 10}, "fully", "0", False),
    ("<jane|0.1|> <bob(0.45)>", {"jane": 10, "bob": 7}, "fully", "0", True),
    ("<bob(2)>, <jane[9]>, <bob.v2|0|>", {"jane": 10, "bob": 3, "bob.v2": 1}, "fully", "0", False),
    ("<jane(0.29)>", {"jane": 100}, "fully", "0", False),
    ("<jane[0.3333]>", {"jane": 3}, "fully", "0", True),
    ("a \\<jane> b < c <jane|1.0|>", {"jane": 10}, "fully", "0", False),
    ("no tags at all", {}, "fully", "0", False),
    ("<jane(3>", {"jane": 10}, "fully", "0", False),
    ("<jane|3>", {"jane": 10}, "fully", "0", False),
    ("<jane( 3)>", {"jane": 10}, "fully", "0", False),
    ("<nobody(3)>", {"jane": 10}, "fully", "0", False),
    ("<jane(10)>", {"jane": 10}, "fully", "0", False),
    ("<jane[1.5]>", {"jane": 10}, "fully", "0", False),
    ("<jane", {"jane": 10}, "fully", "0", False),
]


def python_spans(text, num_scales, mode, resolution, interpolate):
    try:
        tags = resolve_tags(parse_prompt(text), num_scales, Mode(mode), parse_resolution(resolution))
    except MrtiError as exc:
        return {"error": str(exc), "token": exc.token if isinstance(exc, PromptSyntaxError) else None}

    def state(s):
        if isinstance(s, Zero):
            return {"kind": "zero"}
        if isinstance(s, Embedding):
            return {"kind": "e", "index": s.index}
        assert isinstance(s, Blend)
        return {"kind": "blend", "lower": s.lower, "upper": s.upper, "weight": s.weight}

    return {"spans": [[s.t_min, s.t_max, [state(x) for x in s.states]] for s in state_spans(tags, interpolate)]}


def test_js_and_python_agree():
    node = shutil.which("node")
    assert node, "node (Node.js) is needed to run the front end's rules"
    table = [{"text": t, "numScales": n, "mode": m, "resolution": r, "interpolate": i} for t, n, m, r, i in CASES]
    result = subprocess.run([node, str(DUMP)], input=json.dumps(table), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    js = json.loads(result.stdout)
    for case, got in zip(CASES, js):
        want = python_spans(*case)
        if "error" in want:
            assert "error" in got, f"{case[0]!r}: Python refuses it ({want['error']}), JS does not"
            if want["token"] is not None:
                assert got["token"] is not None and got["token"].startswith(want["token"][:len(got["token"])])
            continue
        assert "error" not in got, f"{case[0]!r}: JS refuses it: {got['error']}"
        assert len(got["spans"]) == len(want["spans"]), case[0]
        for g, w in zip(got["spans"], want["spans"]):
            assert g[:2] == w[:2], case[0]
            for gs, ws in zip(g[2], w[2]):
                assert gs.keys() == ws.keys() and all(
                    gs[k] == pytest.approx(ws[k], abs=1e-12) for k in ws), (case[0], g, w)
