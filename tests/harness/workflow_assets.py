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

from PIL import Image  # noqa: E402

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


SD1 = "v1-5-pruned-emaonly-fp16.safetensors"  # what most users have; tests swap in the tiny models
SDXL = "sd_xl_base_1.0.safetensors"
TINY = {SD1: "tiny_sd1.safetensors", SDXL: "tiny_sdxl.safetensors"}


def sampling() -> dict:
    return graphs.multires_txt2img(SD1, [("demo.safetensors", "")], "a painting of a dog in the style of <demo(3)>",
                                   steps=20, size=512, prefix="multires")


def sampling_sdxl() -> dict:
    return graphs.multires_txt2img(SDXL, [("demo_xl.safetensors", "demo")],
                                   "a painting of a dog in the style of <demo(3)>", steps=20, size=1024,
                                   prefix="multires_xl")


def two_concepts() -> dict:
    """The paper's Figure 2: one concept's coarse structure, another's fine detail."""
    return graphs.multires_txt2img(SD1, [("demo.safetensors", "layout"), ("demo.safetensors", "texture")],
                                   "a photo of <layout(5)> made of <texture|0|>", steps=20, size=512,
                                   prefix="multires_two")


def resolution_grid() -> dict:
    """The paper's Figure 3: rows are modes, columns resolutions."""
    return graphs.resolution_grid(SD1, ("demo.safetensors", ""), "a painting of a dog in the style of <demo>",
                                  "fixed, semi, fully", "0, 3, 5, 7, 9", steps=20, size=512, prefix="multires_grid")


WORKFLOWS = {"multires_sampling": sampling, "multires_sampling_sdxl": sampling_sdxl,
             "two_concepts": two_concepts, "resolution_grid": resolution_grid}


def columns(api: dict) -> list[list[str]]:
    """Nodes by depth (longest path from a source), for a left-to-right layout."""
    depth: dict[str, int] = {}

    def depth_of(key: str) -> int:
        if key not in depth:
            sources = [v[0] for v in api[key]["inputs"].values() if isinstance(v, list)]
            depth[key] = 1 + max((depth_of(s) for s in sources), default=-1)
        return depth[key]

    out: list[list[str]] = []
    for key in api:
        d = depth_of(key)
        out.extend([] for _ in range(d + 1 - len(out)))
        out[d].append(key)
    return out


def build(browser: Browser, url: str, name: str, out_dir: Path, picture: Path | None = None) -> Path:
    api = WORKFLOWS[name]()
    numbered_api, ids = numbered(api)
    open_comfyui(browser, url)
    browser.evaluate(f"app.loadApiJson({json.dumps(numbered_api)}, {json.dumps(name)})")
    layout = [[ids[key] for key in column] for column in columns(api)]
    browser.evaluate(f"""(() => {{
        let x = 0;
        for (const column of {json.dumps(layout)}) {{
            let y = 0, widest = 0;
            for (const id of column) {{
                const node = app.graph.getNodeById(id);
                node.pos = [x, y];
                y += node.size[1] + 60;
                widest = Math.max(widest, node.size[0]);
            }}
            x += widest + 50;
        }}
        app.canvas.ds.scale = 0.8; app.canvas.ds.offset = [90, 140];
        app.canvas.setDirty(true, true);
    }})()""")
    time.sleep(1.0)
    workflow = browser.evaluate("app.graph.serialize()")
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(workflow, indent=2) + "\n")
    shot = browser.screenshot(out_dir / f"{name}.png")
    Image.open(shot).convert("RGB").resize((768, 423)).save(out_dir / f"{name}.jpg", quality=85)
    if picture:
        shot.replace(picture)
    else:
        shot.unlink()
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
        for name in WORKFLOWS:
            picture = ROOT / "docs/images/sampling_graph.png" if name == "multires_sampling" else None
            build(browser, server.url, name, ROOT / "workflows", picture)


if __name__ == "__main__":
    main()
