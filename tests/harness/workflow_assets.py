"""Build the example workflows (UI format, made by the real frontend) and the README's graph pictures.

Each workflow is defined here as an API-format graph plus a layout; the frontend loads it (`loadApiJson`),
the nodes are placed, and `graph.serialize()` gives the workflow file ComfyUI users load. Run:

    .venv/bin/python tests/harness/workflow_assets.py
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from harness import comfy_runtime, graphs, host, tiny_models  # noqa: E402
from harness.browser import Browser, open_comfyui  # noqa: E402
from harness.demo_concepts import write_demo_concepts  # noqa: E402
from harness.server import ComfyServer, prepare_base_directory  # noqa: E402



def numbered(api: dict) -> tuple[dict, dict[str, int]]:
    """The graph with node ids 1, 2, … (what the frontend expects in a saved workflow)."""
    ids = {key: i + 1 for i, key in enumerate(api)}
    out = {}
    for key, node in api.items():
        inputs = {name: [str(ids[value[0]]), value[1]] if isinstance(value, list) else value
                  for name, value in node["inputs"].items()}
        out[str(ids[key])] = {**node, "inputs": inputs}
    return out, ids


def sampling_workflow() -> tuple[dict, dict[str, tuple[int, int]]]:
    api = graphs.multires_txt2img("tiny_sd1.safetensors", [("demo.safetensors", "")],
                                  "a painting of a dog in the style of <demo(3)>", steps=20, size=512,
                                  prefix="multires")
    layout = {"ckpt": (0, 0), "load0": (0, 220), "pos": (400, 0), "neg": (400, 330), "latent": (400, 540),
              "sample": (850, 0), "decode": (1190, 0), "save": (1190, 110)}
    return api, layout


WORKFLOWS = {"multires_sampling": sampling_workflow}


def build(browser: Browser, url: str, name: str, out_dir: Path, picture: Path | None) -> Path:
    api, layout = WORKFLOWS[name]()
    numbered_api, ids = numbered(api)
    open_comfyui(browser, url)
    browser.evaluate(f"app.loadApiJson({json.dumps(numbered_api)}, {json.dumps(name)})")
    placements = {ids[key]: list(pos) for key, pos in layout.items()}
    browser.evaluate(f"""(() => {{
        const placements = {json.dumps(placements)};
        for (const [id, pos] of Object.entries(placements)) app.graph.getNodeById(Number(id)).pos = pos;
        for (const node of app.graph._nodes) if (node.type === "CLIPTextEncode") node.size = [380, 170];
        app.canvas.ds.scale = 1.0; app.canvas.ds.offset = [80, 120];
        app.canvas.setDirty(true, true);
    }})()""")
    time.sleep(1.0)
    workflow = browser.evaluate("app.graph.serialize()")
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(workflow, indent=2) + "\n")
    if picture:
        browser.screenshot(picture)
    return path


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="mrti-assets-"))
    host.boot(base / "build")
    checkpoints = tiny_models.ensure_checkpoints(comfy_runtime.cache_dir() / "tiny-models")
    prepare_base_directory(base, checkpoints)
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}))
    write_demo_concepts(base / "models" / "multires_embeddings")
    with ComfyServer(base) as server, Browser(width=1560, height=860) as browser:
        build(browser, server.url, "multires_sampling", ROOT / "workflows", ROOT / "docs/images/sampling_graph.png")


if __name__ == "__main__":
    main()
