"""Build the example workflows (UI format, made by the real frontend) and the README's graph pictures.

Each workflow is defined here as an API-format graph plus a layout; the frontend loads it (`loadApiJson`),
the nodes are placed, and `graph.serialize()` gives the workflow file ComfyUI users load. Run:

    .venv/bin/python tests/harness/workflow_assets.py [name ...]   # workflow names or 'charts'; default all
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from PIL import Image  # noqa: E402

from harness import comfy_runtime, graphs, host, tiny_models  # noqa: E402
from harness.browser import Browser, open_comfyui  # noqa: E402
from harness.demo_concepts import TRAINING_FOLDER, write_demo_concepts, write_training_images  # noqa: E402
from harness.server import TOY_WORLD_CHECKPOINT, ComfyClient, ComfyServer, prepare_base_directory  # noqa: E402
from toyworld import concepts, world  # noqa: E402



def numbered(api: dict) -> tuple[dict, dict[str, int]]:
    """The graph with node ids 1, 2, … (what the frontend expects in a saved workflow)."""
    ids = {key: i + 1 for i, key in enumerate(api)}
    out = {}
    for key, node in api.items():
        inputs = {name: [str(ids[value[0]]), value[1]] if isinstance(value, list) else value
                  for name, value in node["inputs"].items()}
        out[str(ids[key])] = {**node, "inputs": inputs}
    return out, ids


SCALES = {"train_then_sample": 0.6}  # its trainer node is tall

SD1 = "v1-5-pruned-emaonly-fp16.safetensors"  # what most users have; tests swap in the tiny models
SDXL = "sd_xl_base_1.0.safetensors"
TINY = {SD1: "tiny_sd1.safetensors", SDXL: "tiny_sdxl.safetensors"}
# The SD1 workflows ship on the toy-world model, so they run as shipped on the demo server and show
# something learned; with a real SD1.5 model, pick it in the loader and use 512 px and your own words.
TOY = TOY_WORLD_CHECKPOINT.name
TOY_TRAINING = concepts.TrainingRecipe()


def sampling() -> dict:
    return graphs.multires_txt2img(TOY, [("demo.safetensors", "")], "a photo of <demo[0]>",
                                   steps=20, size=world.SIZE, prefix="multires")


def sampling_sdxl() -> dict:
    return graphs.multires_txt2img(SDXL, [("demo_xl.safetensors", "demo")],
                                   "a painting of a dog in the style of <demo(3)>", steps=20, size=1024,
                                   prefix="multires_xl")


def two_concepts() -> dict:
    """The paper's Figure 2: one concept's coarse structure, another's fine detail."""
    return graphs.multires_txt2img(TOY, [("demo.safetensors", "layout"), ("demo.safetensors", "texture")],
                                   "a photo of <layout(5)> with <texture|0|>", steps=20, size=world.SIZE,
                                   prefix="multires_two")


def resolution_grid() -> dict:
    """The paper's Figure 3: rows are modes, columns resolutions."""
    return graphs.resolution_grid(TOY, ("demo.safetensors", ""), "a photo of <demo>",
                                  "fixed, semi, fully", "0, 3, 5, 7, 9", steps=20, size=world.SIZE,
                                  prefix="multires_grid")


def train_then_sample() -> dict:
    """Train a concept from a folder of images, then render it in all three modes at four resolutions."""
    graph = graphs.train_then_sample(TOY, TRAINING_FOLDER, "my_concept", "a photo of <my_concept>",
                                     "fixed, semi, fully", "0, 3, 6, 9", steps=20, size=world.SIZE,
                                     prefix="multires_trained")
    recipe = TOY_TRAINING.inputs("my_concept")
    graph["train"]["inputs"].update({k: recipe[k] for k in (
        "init_word", "steps", "learning_rate", "scale_lr", "resolution", "gradient_accumulation")}, save_every=50)
    return graph


WORKFLOWS = {"multires_sampling": sampling, "multires_sampling_sdxl": sampling_sdxl,
             "two_concepts": two_concepts, "resolution_grid": resolution_grid,
             "train_then_sample": train_then_sample}


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
    scale = SCALES.get(name, 0.8)
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
        app.canvas.ds.scale = {scale}; app.canvas.ds.offset = [{round(72 / scale)}, {round(112 / scale)}];
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


PICTURES = {"multires_sampling": ROOT / "docs/images/sampling_graph.png",
            "train_then_sample": ROOT / "docs/images/training_graph.png"}


def training_charts(server: ComfyServer) -> None:
    """The trainer's own loss and g(t) outputs from the train_then_sample run on the toy-world model, and
    its grid of the trained concept, for the README."""
    graph = train_then_sample()
    graph["train"]["inputs"].update(name="chart_run", save_every=0)
    graph["pos"]["inputs"]["text"] = "a photo of <chart_run>"
    result = ComfyClient(server.url).run(graph, timeout=1800)
    if not result.ok:
        raise SystemExit(result.error_message())
    for key, picture in (("loss", "loss_curve.png"), ("g_t", "g_t.png"), ("save", "trained_grid.png")):
        image = result.history["outputs"][key]["images"][0]
        shutil.copyfile(server.base / image["type"] / image["subfolder"] / image["filename"],
                        ROOT / "docs/images" / picture)


def main(names: list[str]) -> None:
    known = [*WORKFLOWS, "charts"]
    unknown = set(names) - set(known)
    if unknown:
        raise SystemExit(f"unknown name(s) {sorted(unknown)}; known: {', '.join(known)}")
    base = Path(tempfile.mkdtemp(prefix="mrti-assets-"))
    host.boot(base / "build")
    checkpoints = tiny_models.ensure_checkpoints(comfy_runtime.cache_dir() / "tiny-models")
    prepare_base_directory(base, checkpoints)
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}))
    write_demo_concepts(base / "models" / "multires_embeddings")
    write_training_images(base / "input")
    with ComfyServer(base) as server, Browser(width=1560, height=860) as browser:
        for name in names or known:
            if name == "charts":
                training_charts(server)
            else:
                build(browser, server.url, name, ROOT / "workflows", PICTURES.get(name))


if __name__ == "__main__":
    main(sys.argv[1:])
