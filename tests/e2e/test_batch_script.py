"""The documented batch-queueing script, run as a user would: extracted from docs/api.md, started as a
subprocess against the real test server with an API-format workflow (tiny SD1 model, a multires loader and
the timestep scheduler), two prompts x two seeds; then with workflows the server refuses or fails on."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dev.harness import comfy_runtime, graphs
from dev.harness.demo_concepts import random_concept
from dev.harness.server import free_port
from mrti.concept import ModelFamily
from mrti.concept_file import save_concept

HEADING = "## Queue many prompts from a script"
PROMPTS = ["a castle in the style of <batchy(3)>", "a harbor at dusk, <batchy|0|>"]
WORDS = ["castle", "harbor"]  # a word of each prompt that its images' names must carry
SEEDS = [11, 12]
SIZE = 64
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Titles as the editor's Export (API) writes them into "_meta"; the sampler gets a title of its own.
TITLES = {"ckpt": "Load Checkpoint", "neg": "CLIP Text Encode (Prompt)", "latent": "Empty Latent Image",
          "sample": "Main sampler", "decode": "VAE Decode", "save": "Save Image",
          "load0": "Load Multires Embedding", "pos": "Multires Prompt (Timestep Scheduled)"}


def readme_script() -> str:
    doc = (comfy_runtime.REPO_ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    section = re.search(rf"^{re.escape(HEADING)}\n(.*?)(?=^## |\Z)", doc, re.MULTILINE | re.DOTALL)
    assert section, f"docs/api.md has no section {HEADING!r}"
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, f"expected one python block under {HEADING!r}, found {len(blocks)}"
    return blocks[0]


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("batch-script") / "queue_batch.py"
    path.write_text(readme_script(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def concept(server) -> str:
    folder = server.base / "models" / "multires_embeddings"
    save_concept(random_concept("batchy", ModelFamily.SD1, 10, seed=41, scale=0.5),
                 folder / "batchy.safetensors", overwrite=True)
    return "batchy.safetensors"


def workflow(concept: str, **overrides) -> dict:
    """An API-format workflow as Export (API) writes it; `overrides` maps "node.input" to a new value,
    None to drop the input."""
    graph = graphs.multires_txt2img("tiny_sd1.safetensors", [(concept, "")], "placeholder <batchy(2)>",
                                    seed=0, steps=3, size=SIZE, prefix="batch_script")
    for key, node in graph.items():
        node["_meta"] = {"title": TITLES[key]}
    for where, value in overrides.items():
        node, name = where.split(".")
        if value is None:
            del graph[node]["inputs"][name]
        else:
            graph[node]["inputs"][name] = value
    return graph


def run_script(script: Path, tmp_path: Path, graph: dict | str, *args: str,
               timeout: float = 300) -> subprocess.CompletedProcess:
    wf = tmp_path / "workflow_api.json"
    wf.write_text(graph if isinstance(graph, str) else json.dumps(graph, indent=1))
    return subprocess.run([sys.executable, str(script), str(wf), *args], capture_output=True, text=True,
                          check=False, timeout=timeout, cwd=tmp_path)


def server_images(client, client_ids: set[str]) -> dict[tuple[str, int], list[dict]]:
    """{(text, seed): output image infos} of the history entries queued under `client_ids`."""
    found = {}
    for entry in client.get("/history").values():
        _, _, prompt, extra, *_ = entry["prompt"]
        if extra.get("client_id") in client_ids:
            key = (prompt["pos"]["inputs"]["text"], prompt["sample"]["inputs"]["seed"])
            assert key not in found, f"{key} was queued twice"
            found[key] = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    return found


def test_readme_script_is_plain_python():
    source = readme_script()
    assert source.isascii()
    compile(source, "queue_batch.py", "exec")
    imports = {name for line in source.splitlines() if line.startswith("import ")
               for name in re.findall(r"[\w.]+", line[len("import "):])}
    assert imports and all(name.split(".")[0] in sys.stdlib_module_names for name in imports), imports
    assert not re.search(r"^from |requests|websocket", source, re.MULTILINE)
    assert 40 <= len(source.splitlines()) <= 80


def test_two_prompts_two_seeds(server, client, concept, script, tmp_path):
    before = set(client.get("/history"))
    (tmp_path / "prompts.txt").write_text(f"\n{PROMPTS[1]}\n\n")
    out = tmp_path / "images"
    done = run_script(script, tmp_path, workflow(concept), "--server", server.url, "--prompt", PROMPTS[0],
                      "--prompts-file", "prompts.txt", "--seeds", *map(str, SEEDS),
                      "--seed-node", "Main sampler", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr

    files = sorted(out.iterdir())
    assert len(files) == 4, [f.name for f in files]
    by_job = {}
    for n, (text, word) in enumerate(zip(PROMPTS, WORDS), start=1):
        for seed in SEEDS:
            named = [f for f in files if f.name.startswith(f"{n:02d}-") and word in f.name
                     and f"_seed{seed}_" in f.name and f.suffix == ".png"]
            assert len(named) == 1, f"prompt {n} seed {seed}: {[f.name for f in files]}"
            by_job[(text, seed)] = named[0]

    # Each file is the very image the server made for its prompt and seed, and the server got what was asked.
    history = client.get("/history")
    new_ids = set(history) - before
    client_ids = {history[i]["prompt"][3].get("client_id") for i in new_ids}
    assert len(new_ids) == 4 and len(client_ids) == 1 and None not in client_ids, client_ids
    made = server_images(client, client_ids)
    assert set(made) == set(by_job)
    pixels = {}
    for job, path in by_job.items():
        (info,) = made[job]
        data = path.read_bytes()
        assert data == (server.base / info["type"] / info["subfolder"] / info["filename"]).read_bytes(), job
        assert data[:8] == PNG_SIGNATURE
        image = Image.open(io.BytesIO(data))
        assert image.format == "PNG" and image.size == (SIZE, SIZE)
        pixels[job] = np.asarray(image.convert("RGB"))
    for text in PROMPTS:
        assert not np.array_equal(pixels[(text, SEEDS[0])], pixels[(text, SEEDS[1])]), f"one image: {text}"
    for seed in SEEDS:  # the text was set, not only the seed
        assert not np.array_equal(pixels[(PROMPTS[0], seed)], pixels[(PROMPTS[1], seed)]), f"one image: {seed}"


REFUSED = [
    ("missing input", {"pos.clip": None}, ["node pos (TimestepConditioningScheduler)", "input 'clip'"]),
    ("unknown mode", {"pos.mode": "sideways"},
     ["node pos (TimestepConditioningScheduler)", "input 'mode'", "sideways"]),
    ("unknown sampler", {"sample.sampler_name": "no_such_sampler"},
     ["node sample (KSampler)", "input 'sampler_name'", "no_such_sampler"]),
]


@pytest.mark.parametrize("label,overrides,culprits", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_workflow_names_node_and_input(server, concept, script, tmp_path, label, overrides, culprits):
    out = tmp_path / "images"
    done = run_script(script, tmp_path, workflow(concept, **overrides), "--server", server.url,
                      "--prompt", PROMPTS[0], "--seeds", "1", "--out", str(out))
    assert done.returncode != 0, f"{label}: exited 0\n{done.stdout}{done.stderr}"
    assert "HTTP 400" in done.stderr, done.stderr
    for culprit in culprits:
        assert culprit in done.stderr, f"{label}: {culprit!r} not in\n{done.stderr}"
    assert not out.exists() or not any(out.iterdir())


def test_failed_prompt_is_reported_and_others_still_saved(server, concept, script, tmp_path):
    out = tmp_path / "images"
    done = run_script(script, tmp_path, workflow(concept), "--server", server.url, "--prompt",
                      "a photo of <nobody(2)>", "--prompt", PROMPTS[0], "--seeds", "3", "--out", str(out))
    assert done.returncode != 0, done.stdout + done.stderr
    assert "node pos (TimestepConditioningScheduler)" in done.stderr and "nobody" in done.stderr, done.stderr
    assert "1 of 2 prompts failed" in done.stderr, done.stderr
    (saved,) = out.iterdir()
    assert saved.name.startswith("02-") and "castle" in saved.name and "_seed3_" in saved.name


def test_unreachable_server_and_editor_format(script, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    done = run_script(script, tmp_path, workflow("batchy.safetensors"), "--server", url, "--prompt", "x",
                      timeout=60)
    assert done.returncode != 0 and f"cannot reach ComfyUI at {url}" in done.stderr, done.stderr
    done = run_script(script, tmp_path, json.dumps({"nodes": [], "links": []}), "--server", url,
                      "--prompt", "x", timeout=60)
    assert done.returncode != 0 and "Export (API)" in done.stderr, done.stderr
