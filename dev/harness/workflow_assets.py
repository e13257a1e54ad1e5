"""Build the example workflows (UI format, made by the real frontend) and the README's graph pictures.

Each workflow is defined here as an API-format graph plus a layout; the frontend loads it (`loadApiJson`),
the nodes are placed, and `graph.serialize()` gives the workflow file ComfyUI users load. Run:

    .venv/bin/python -m dev.harness.workflow_assets [name ...]   # workflow names, 'charts' or 'editor'; default all

'editor' stamps the browser tests' screenshots into the documents' editor pictures (dev/harness/editor_pictures.py);
the workflows' own pictures of the editor are stamped as they are taken.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from dev.harness import comfy_runtime, editor_pictures, graphs, host, tiny_models
from dev.harness.browser import Browser, open_comfyui
from dev.harness.demo_concepts import TRAINING_FOLDER
from dev.harness.devserver import DEMO_SDXL_CHECKPOINT, prepare_demo_base
from dev.harness.server import TOY_WORLD_CHECKPOINT, ComfyClient, ComfyServer, prepare_base_directory
from dev.toyworld import concepts, world

ROOT = Path(__file__).resolve().parents[2]


def numbered(api: dict) -> tuple[dict, dict[str, int]]:
    """The graph with node ids 1, 2, ... (what the frontend expects in a saved workflow)."""
    ids = {key: i + 1 for i, key in enumerate(api)}
    out = {}
    for key, node in api.items():
        inputs = {name: [str(ids[value[0]]), value[1]] if isinstance(value, list) else value
                  for name, value in node["inputs"].items()}
        out[str(ids[key])] = {**node, "inputs": inputs}
    return out, ids


SCALES = {"train_then_sample": 0.6}  # its trainer node is tall
NOTE_SIZE = [400, 230]

SD1 = "v1-5-pruned-emaonly-fp16.safetensors"  # what most users have; tests swap in the tiny models
SDXL = "sd_xl_base_1.0.safetensors"
# The SD1 workflows ship on the toy-world model, so they run as shipped on the demo server and show
# something learned; with a real SD1.5 model, pick it in the loader and use 512 px and your own words.
# The SDXL one ships on the demo server's tiny random SDXL model (it draws noise), at 512 px to keep a
# CPU run short; with a real SDXL model, pick it and use 1024 px. Each workflow's note says so.
TOY = TOY_WORLD_CHECKPOINT.name
DEMO_SDXL = DEMO_SDXL_CHECKPOINT
REAL = {TOY: SD1, DEMO_SDXL: SDXL}  # the demo server's checkpoint -> what a real user picks instead
TINY = {SD1: "tiny_sd1.safetensors", SDXL: "tiny_sdxl.safetensors", DEMO_SDXL: "tiny_sdxl.safetensors"}
TOY_TRAINING = concepts.TrainingRecipe()


def titled(graph: dict, **titles: str) -> dict:
    """`graph` with node titles (`_meta.title`, which the frontend's API loader applies), so nodes of one
    type stay apart for clients that address nodes by title."""
    for key, title in titles.items():
        graph[key]["_meta"] = {"title": title}
    return graph


def sampling() -> dict:
    return graphs.multires_txt2img(TOY, [("demo.safetensors", "")], "a photo of <demo[0]>",
                                   steps=20, size=world.SIZE, prefix="multires")


def sampling_sdxl() -> dict:
    return graphs.multires_txt2img(DEMO_SDXL, [("demo_xl.safetensors", "demo")],
                                   "a painting of a dog in the style of <demo(3)>", steps=20, size=512,
                                   prefix="multires_xl")


def two_concepts() -> dict:
    """The paper's Figure 2: one concept's coarse structure, another's fine detail. On the toy world the
    yellow striped circle's background, colour and place come with the blue dotted square's shape."""
    graph = graphs.multires_txt2img(TOY, [("demo.safetensors", "layout"), ("demo_dots.safetensors", "detail")],
                                    "a photo of <layout(5)> with <detail|0|>", steps=20, size=world.SIZE,
                                    prefix="multires_two")
    return titled(graph, load0="Load concept: layout", load1="Load concept: detail")


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
        "init_word", "steps", "learning_rate", "scale_lr", "image_size", "gradient_accumulation")}, save_every=50)
    return titled(graph, loss="Preview: loss", g_t="Preview: g(t)")


WORKFLOWS = {"multires_sampling": sampling, "multires_sampling_sdxl": sampling_sdxl,
             "two_concepts": two_concepts, "resolution_grid": resolution_grid,
             "train_then_sample": train_then_sample}


def note(api: dict) -> str:
    """The text of a workflow's Note: the model it loads on the demo server, what a real user picks
    instead, and where its concept file (or training pictures) come from."""
    checkpoint = next(n["inputs"]["ckpt_name"] for n in api.values() if n["class_type"] == "CheckpointLoaderSimple")
    if checkpoint == TOY:
        lines = [(f"On the demo server (scripts/serve.sh) this loads {TOY}, the pack's small toy-world model "
                  f"({world.SIZE} px pictures)."),
                 (f"With your own SD1.5 model, pick it instead (e.g. {REAL[TOY]}), set 512 px and use your own "
                  "words.")]
    else:
        lines = [(f"On the demo server (scripts/serve.sh) this loads {checkpoint}, a tiny SDXL-architecture model "
                  "with random weights: it draws noise and only shows that the graph runs."),
                 f"With your own SDXL model, pick it instead (e.g. {REAL[checkpoint]}) and set 1024 px."]
    loaders = [n["inputs"]["concept"] for n in api.values() if n["class_type"] == "MultiResEmbeddingLoader"]
    trainer = next((n["inputs"] for n in api.values() if n["class_type"] == "MultiResEmbeddingTrainer"), None)
    if loaders:
        lines.append(f"The concept file {' and '.join(sorted(set(loaders)))} is written into "
                     "models/multires_embeddings by the demo server; "
                     + ("pick a concept you trained instead." if len(loaders) == 1 else
                        "pick concepts you trained in the loaders instead."))
    if trainer:
        lines.append(f"The training pictures in input/{TRAINING_FOLDER} are written by the demo server; "
                     "put your own pictures of your concept there. The toy settings "
                     f"({trainer['steps']} steps at {trainer['image_size']} px) suit the toy model; for a real one "
                     "use the trainer's defaults (3000 steps at 512 px).")
    return "\n\n".join(lines)


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


def build(browser: Browser, url: str, name: str, out_dir: Path, picture: Path | None = None,
          object_info: dict | None = None) -> Path:
    api = WORKFLOWS[name]()
    # The stock frontend-only Note node, last so the other nodes keep their ids; placed top left.
    api["note"] = {"class_type": "Note", "inputs": {"text": note(api)}}
    numbered_api, ids = numbered(api)
    open_comfyui(browser, url)
    # The frontend restores the last session's tabs a moment after the graph is ready; load after that, or
    # the restored tab ends up in front of this workflow in the thumbnail.
    browser.wait_for("!!app.extensionManager?.workflow?.activeWorkflow")
    time.sleep(0.5)
    browser.evaluate(f"app.loadApiJson({json.dumps(numbered_api)}, {json.dumps(name)})")
    browser.wait_for(f"app.extensionManager.workflow.activeWorkflow?.filename === {json.dumps(name)}")
    layout = [[ids[key] for key in column] for column in columns(api)]
    layout[0].sort(key=lambda node_id: node_id != ids["note"])
    scale = SCALES.get(name, 0.8)
    browser.evaluate(f"""(() => {{
        app.graph.getNodeById({ids["note"]}).size = {json.dumps(NOTE_SIZE)};
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
        // Shipped with fixed seeds, so a user's first queue draws the pictures the documents show.
        for (const node of app.graph._nodes)
            for (const w of node.widgets ?? []) if (w.name === "control_after_generate") w.value = "fixed";
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
        editor_pictures.save_stamped(Image.open(shot), picture,
                                     editor_pictures.definitions_stamp(object_info, picture.name))
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
    known = [*WORKFLOWS, "charts", "editor"]
    unknown = set(names) - set(known)
    if unknown:
        raise SystemExit(f"unknown name(s) {sorted(unknown)}; known: {', '.join(known)}")
    base = Path(tempfile.mkdtemp(prefix="mrti-assets-"))
    host.boot(base / "build")
    checkpoints = tiny_models.ensure_checkpoints(comfy_runtime.cache_dir() / "tiny-models")
    prepare_base_directory(base, checkpoints)
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}))
    prepare_demo_base(base)  # the demo server's models, concepts and training pictures
    with ComfyServer(base) as server, Browser(width=1560, height=860) as browser:
        object_info = ComfyClient(server.url).get("/object_info", timeout=120)
        for name in names or known:
            if name == "charts":
                training_charts(server)
            elif name == "editor":
                print("wrote", *editor_pictures.from_screenshots(object_info))
            else:
                build(browser, server.url, name, ROOT / "workflows", PICTURES.get(name), object_info)


if __name__ == "__main__":
    main(sys.argv[1:])
