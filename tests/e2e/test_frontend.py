"""The real frontend in headless Chromium against the real server: example workflows load and run, the
schedule strip is drawn and follows the mode, and the prompt box completes concept tags."""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dev.harness import comfy_runtime
from dev.harness.browser import Browser, open_comfyui
from dev.harness.demo_concepts import write_demo_concepts, write_training_images
from dev.harness.workflow_assets import TINY

SCREENSHOTS = comfy_runtime.cache_dir() / "screenshots"
WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.json"))


@pytest.fixture(scope="module")
def page(server):
    write_demo_concepts(server.base / "models" / "multires_embeddings")
    write_training_images(server.base / "input")  # before the page loads: the folder list comes with it
    with Browser(width=1500, height=900) as browser:
        open_comfyui(browser, server.url)
        yield browser


def load(page, workflow: dict) -> None:
    page.evaluate(f"app.loadGraphData({json.dumps(workflow)})")
    page.wait_for("app.graph._nodes.length > 0")


def test_every_workflow_has_a_thumbnail():
    assert WORKFLOWS
    for path in WORKFLOWS:
        assert path.with_suffix(".jpg").is_file(), f"{path.name} has no thumbnail"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_loads_and_runs(server, client, page, path):
    templates = client.get("/workflow_templates")
    assert path.stem in next(iter(templates.values())), "the server does not offer it as a template"
    load(page, json.loads(path.read_text()))
    problems = page.evaluate("""(() => {
        const missing = app.graph._nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type);
        const broken = Object.values(app.graph.links ?? {}).filter(l => l &&
            (!app.graph.getNodeById(l.origin_id) || !app.graph.getNodeById(l.target_id))).map(l => l.id);
        return {missing, broken};
    })()""")
    assert problems == {"missing": [], "broken": []}
    # As a user would: pick the installed model, and keep the run small for a CPU.
    page.evaluate(f"""(() => {{
        const tiny = {json.dumps(TINY)};
        for (const node of app.graph._nodes) for (const w of node.widgets ?? []) {{
            if (w.name === 'ckpt_name' && tiny[w.value]) w.value = tiny[w.value];
            if ((w.name === 'width' || w.name === 'height') && node.type === 'EmptyLatentImage') w.value = 64;
            if (w.name === 'steps') w.value = 3;
            if (w.name === 'image_size' && node.type === 'MultiResEmbeddingTrainer') w.value = 64;
        }}
    }})()""")
    before = set(client.get("/history"))
    page.evaluate("app.queuePrompt(0, 1)")
    result = client.wait(next_history_entry(client, before))
    assert result.ok, result.error_message()
    images = result.images()
    assert images and all((server.base / i["type"] / i["subfolder"] / i["filename"]).is_file() for i in images)
    assert any(i["type"] == "output" for i in images)


def next_history_entry(client, before: set, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = set(client.get("/history")) - before
        if new:
            return new.pop()
        time.sleep(0.2)
    raise AssertionError("queueing from the UI reached no history entry")


def strip_pixels(page, mode: str, resolution: str = "3", entry: str = "demo.safetensors") -> np.ndarray:
    """The schedule strip of the prompt node, cut out of a screenshot, with `mode` and `resolution`
    selected and the loader set to the concept file `entry` (named `demo` in the prompt)."""
    rect = page.evaluate(f"""(() => {{
        const loader = app.graph._nodes.find(n => n.comfyClass === 'MultiResEmbeddingLoader');
        loader.widgets.find(w => w.name === 'concept').value = {json.dumps(entry)};
        loader.widgets.find(w => w.name === 'name').value = 'demo';
        const node = app.graph._nodes.find(n => n.comfyClass === 'TimestepConditioningScheduler');
        node.widgets.find(w => w.name === 'text').value = 'a photo of <demo>';
        node.widgets.find(w => w.name === 'resolution').value = {json.dumps(resolution)};
        node.widgets.find(w => w.name === 'mode').value = {json.dumps(mode)};
        app.canvas.ds.scale = 1; app.canvas.ds.offset = [200 - node.pos[0], 120 - node.pos[1]];
        app.canvas.setDirty(true, true); app.canvas.draw(true, true);
        const strip = node.widgets.find(w => w.name === 'mrti_schedule');
        const box = app.canvas.canvas.getBoundingClientRect();
        const [x, y] = app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] + strip.last_y]);
        return {{x: box.left + x, y: box.top + y, w: node.size[0], h: strip.computedHeight}};
    }})()""")
    time.sleep(0.5)
    shot = Image.open(io.BytesIO(page.screenshot_bytes()))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)  # the README's pictures come from these
    if entry == "demo.safetensors":
        shot.crop((int(rect["x"]) - 20, int(rect["y"]) - 250, int(rect["x"] + rect["w"]) + 20,
                   int(rect["y"] + rect["h"]) + 20)).save(SCREENSHOTS / f"schedule_strip_{mode}.png")
    box = (int(rect["x"]), int(rect["y"]), int(rect["x"] + rect["w"]), int(rect["y"] + rect["h"]))
    return np.asarray(shot.convert("RGB").crop(box)).astype(int)


def test_schedule_strip_follows_the_mode(page):
    load(page, json.loads((WORKFLOWS[0].parent / "multires_sampling.json").read_text()))
    fully, semi = strip_pixels(page, "fully"), strip_pixels(page, "semi")
    assert fully.shape == semi.shape and fully.shape[0] > 10
    assert np.abs(fully - semi).sum(axis=2).astype(bool).mean() > 0.05, "the strip did not change with the mode"
    # The clean end (right) of the bar: semi shows the dark zero vector, fully the coloured e_3.
    clean_end = (slice(fully.shape[0] // 2, None), slice(-60, -25))
    saturation = lambda px: (px.max(axis=2) - px.min(axis=2)).mean()  # noqa: E731
    assert saturation(fully[clean_end]) > 60 and saturation(semi[clean_end]) < 20


def schedule_js(entry: str, text: str = "a photo of <demo>", mode: str = "fully", resolution: str = "0",
                name: str = "demo") -> str:
    """JavaScript that points the loader at `entry`, sets the prompt node, draws, and gives the node's schedule
    as the strip drew it: {error, spans, untrained}. Waiting on it waits for what the server said about
    `entry` to reach the strip."""
    return f"""(() => {{
        const loader = app.graph._nodes.find(n => n.comfyClass === 'MultiResEmbeddingLoader');
        loader.widgets.find(w => w.name === 'concept').value = {json.dumps(entry)};
        loader.widgets.find(w => w.name === 'name').value = {json.dumps(name)};
        const node = app.graph._nodes.find(n => n.comfyClass === 'TimestepConditioningScheduler');
        node.widgets.find(w => w.name === 'text').value = {json.dumps(text)};
        node.widgets.find(w => w.name === 'resolution').value = {json.dumps(resolution)};
        node.widgets.find(w => w.name === 'mode').value = {json.dumps(mode)};
        app.canvas.setDirty(true, true); app.canvas.draw(true, true);
        const s = node.mrtiSchedule;
        return {{error: s.error ?? null, spans: s.spans.length, untrained: s.untrained}};
    }})()"""


def test_schedule_strip_marks_scales_that_never_trained(server, page):
    from dataclasses import replace

    from mrti.concept_file import load_concept, save_concept

    folder = server.base / "models" / "multires_embeddings"
    demo = load_concept(folder / "demo.safetensors")
    save_concept(replace(demo, info=replace(demo.info, examples_per_scale=(0,) * 5 + (40,) * 5)),
                 folder / "half_untrained.safetensors", overwrite=True)
    load(page, json.loads((WORKFLOWS[0].parent / "multires_sampling.json").read_text()))  # re-reads the folder
    page.wait_for(schedule_js("half_untrained.safetensors") + ".untrained.demo?.length === 5")
    trained, half = (strip_pixels(page, "fully", "0", entry) for entry in ("demo.safetensors",
                                                                             "half_untrained.safetensors"))
    saturation = lambda px: (px.max(axis=2) - px.min(axis=2)).mean()  # noqa: E731
    rows = slice(trained.shape[0] // 2, None)
    noisy, clean = (rows, slice(120, 220)), (rows, slice(-200, -25))  # e9..e5 on the left, e4..e0 right
    assert abs(saturation(trained[noisy]) - saturation(half[noisy])) < 5
    assert saturation(half[clean]) < 0.6 * saturation(trained[clean]), "untrained scales are not marked"


def test_schedule_strip_shows_a_broken_concept_as_broken(server, page):
    import torch

    from dev.harness.concept_files import write_raw_concept

    folder = server.base / "models" / "multires_embeddings"
    write_raw_concept(folder / "broken_width.safetensors", torch.zeros(6, 1, 100))
    load(page, json.loads((WORKFLOWS[0].parent / "multires_sampling.json").read_text()))
    page.wait_for(schedule_js("broken_width.safetensors") + ".error !== null")
    strip_pixels(page, "fully", "0", "broken_width.safetensors")
    error = page.evaluate("app.graph._nodes.find(n => n.comfyClass === 'TimestepConditioningScheduler')"
                          ".mrtiSchedule.error")
    assert error.startswith("concept demo is broken:") and "width 100" in error, error
    strip_pixels(page, "fully", "0", "demo.safetensors")
    assert page.evaluate("app.graph._nodes.find(n => n.comfyClass === 'TimestepConditioningScheduler')"
                         ".mrtiSchedule.error") is None


def test_schedule_strip_takes_an_ordinary_embedding_as_one_scale(server, page):
    """The loader's `embedding: <file>` option: the strip names the concept by the file's stem and draws the
    one scale the loader makes of it (a guessed N of 10 would draw ten)."""
    import torch

    from dev.harness.concept_files import write_a1111_embedding

    folder = server.base / "models" / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    write_a1111_embedding(folder / "strip_style.pt", torch.full((1, 768), 0.1))
    load(page, json.loads((WORKFLOWS[0].parent / "multires_sampling.json").read_text()))  # re-reads the folders
    # The strip draws a guessed N of 10 until the server's answer arrives: ten spans for <S[0]>, then one.
    page.wait_for(schedule_js("embedding: strip_style.pt", "a photo of <strip_style[0]>", name="") + ".spans === 1")
    schedule = page.evaluate(schedule_js("embedding: strip_style.pt", "a photo of <strip_style[0]>", name=""))
    schedule = {"error": schedule["error"], "spans": schedule["spans"]}
    assert schedule == {"error": None, "spans": 1}, schedule


def test_tags_reach_the_server_as_written(page):
    """The frontend's dynamic prompts would turn {<demo|0|>|<demo(3)>} into "<demo" or "0"; the prompt box
    has them switched off, so braces and bars stay as typed."""
    load(page, json.loads((WORKFLOWS[0].parent / "multires_sampling.json").read_text()))
    text = "{<demo|0|>|<demo(3)>} a photo of <demo[2]>, {red|blue}"
    sent = page.evaluate(f"""(async () => {{
        const node = app.graph._nodes.find(n => n.comfyClass === 'TimestepConditioningScheduler');
        node.widgets.find(w => w.name === 'text').value = {json.dumps(text)};
        const prompt = await app.graphToPrompt();
        return prompt.output[String(node.id)].inputs.text;
    }})()""")
    assert sent == text
    clip_text = page.evaluate("""(async () => {
        const node = app.graph._nodes.find(n => n.comfyClass === 'CLIPTextEncode');
        node.widgets.find(w => w.name === 'text').value = '{red|blue}';
        return (await app.graphToPrompt()).output[String(node.id)].inputs.text;
    })()""")
    assert clip_text in ("red", "blue"), "the stock box no longer resolves choices: the test proves nothing"


def test_prompt_box_completes_concept_tags(page):
    load(page, json.loads((WORKFLOWS[0].parent / "multires_sampling.json").read_text()))
    page.evaluate("""(() => {
        const node = app.graph._nodes.find(n => n.comfyClass === 'TimestepConditioningScheduler');
        const el = node.widgets.find(w => w.name === 'text').inputEl;
        el.focus(); el.value = 'a painting of <de'; el.setSelectionRange(el.value.length, el.value.length);
        el.dispatchEvent(new Event('input', {bubbles: true}));
    })()""")
    items = page.wait_for("document.querySelector('.mrti-completion')?.innerText", timeout=10)
    assert "<demo[0]>" in items and "<demo(0)>" in items and "<demo|0|>" in items
    value = page.evaluate("""(() => {
        const node = app.graph._nodes.find(n => n.comfyClass === 'TimestepConditioningScheduler');
        const el = node.widgets.find(w => w.name === 'text').inputEl;
        el.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown', bubbles: true}));
        el.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true}));
        return [el.value, node.widgets.find(w => w.name === 'text').value];
    })()""")
    assert value == ["a painting of <demo(0)>", "a painting of <demo(0)>"]


def test_trainer_draws_its_loss_curve_while_training(server, client, page):
    load(page, json.loads((WORKFLOWS[0].parent / "train_then_sample.json").read_text()))
    node_id = page.evaluate(f"""(() => {{
        const tiny = {json.dumps(TINY)};
        for (const node of app.graph._nodes) for (const w of node.widgets ?? [])
            if (w.name === 'ckpt_name' && tiny[w.value]) w.value = tiny[w.value];
        const node = app.graph._nodes.find(n => n.comfyClass === 'MultiResEmbeddingTrainer');
        const set = (name, value) => {{ node.widgets.find(w => w.name === name).value = value; }};
        set('name', 'curve_run'); set('steps', 100000); set('image_size', 64); set('save_every', 0);
        set('gradient_accumulation', 4); set('learning_rate', 0.01);
        app.canvas.ds.scale = 1; app.canvas.draw(true, true);
        const curve = node.widgets.find(w => w.name === 'mrti_training_curve');
        app.canvas.ds.offset = [200 - node.pos[0], 400 - node.pos[1] - curve.last_y];
        return node.id;
    }})()""")
    before = set(client.get("/history"))
    page.evaluate("app.queuePrompt(0, 1)")
    try:
        page.wait_for(f"app.graph.getNodeById({node_id}).mrtiTraining?.losses.length >= 12", timeout=180)
        rect = page.evaluate(f"""(() => {{
            const node = app.graph.getNodeById({node_id});
            app.canvas.setDirty(true, true); app.canvas.draw(true, true);
            const curve = node.widgets.find(w => w.name === 'mrti_training_curve');
            const box = app.canvas.canvas.getBoundingClientRect();
            const [x, y] = app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] + curve.last_y]);
            return {{x: box.left + x, y: box.top + y, w: node.size[0], h: curve.computeSize(node.size[0])[1],
                     step: node.mrtiTraining.step, total: node.mrtiTraining.total}};
        }})()""")
        shot = Image.open(io.BytesIO(page.screenshot_bytes())).convert("RGB")
    finally:
        client._request("POST", "/interrupt", {})
    assert rect["total"] == 100000 and rect["step"] >= 12
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)  # the README's picture comes from this
    shot.crop((int(rect["x"]), int(rect["y"]) - 120, int(rect["x"] + rect["w"]),
               int(rect["y"] + rect["h"]) + 10)).save(SCREENSHOTS / "trainer_curves.png")
    curve = np.asarray(shot.crop((int(rect["x"]), int(rect["y"]), int(rect["x"] + rect["w"]),
                                  int(rect["y"] + rect["h"])))).astype(int)
    left, right = curve[:, : curve.shape[1] // 2], curve[:, curve.shape[1] // 2:]
    # The loss is drawn in blue (#5ad) on the left, g(t) in orange (#e94) on the right.
    r, g, b = (left[..., i] for i in range(3))
    assert ((b > 170) & (r < 130) & (g > 130)).sum() > 40, "no loss curve drawn"
    r, g, b = (right[..., i] for i in range(3))
    assert ((r > 190) & (g > 110) & (g < 190) & (b < 110)).sum() > 40, "no g(t) curve drawn"
    result = client.wait(next_history_entry(client, before), timeout=60)
    assert not result.ok  # interrupted, as asked
