"""The registry archive, built offline by the registry's own tool (`comfy node pack` from comfy-cli), holds what
a user runs and nothing else, and, unpacked into a fresh custom_nodes folder of a real ComfyUI, registers every
node of the pack and no test node. Also: ComfyUI-Manager's ways of finding a pack's nodes in its repository
(node_list.json, mapping literals, V3 node ids) find exactly the pack's nodes; and comfy-test's static lint
(Python sources a Windows console can print, frontend code that keeps to its own namespace and DOM) passes."""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dev.harness import comfy_runtime
from dev.harness.server import ComfyClient, ComfyServer

ROOT = comfy_runtime.REPO_ROOT
NODES = {"MultiResEmbeddingLoader", "TimestepConditioningScheduler", "MultiResGridPrompts", "MultiResGridImage",
         "MultiResEmbeddingTrainer", "MultiResEmbeddingExport"}
SHIPPED_TOP = {"__init__.py", "LICENSE", "README.md", "pyproject.toml", "node_list.json", "nodes", "mrti", "js",
               "workflows", "docs"}


def _tree_as_repository(dest: Path) -> Path:
    """The working tree's files (tracked and new, not ignored) in a fresh git repository, as `comfy node pack`
    packs what git tracks."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        source = ROOT / rel
        if source.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    return dest


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return _tree_as_repository(tmp_path_factory.mktemp("pack-source"))


@pytest.fixture(scope="module")
def archive(repo, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("pack-home")  # comfy-cli keeps its settings under HOME
    comfy = Path(sys.executable).parent / "comfy"
    done = subprocess.run([str(comfy), "--skip-prompt", "--no-enable-telemetry", "node", "pack"], cwd=repo,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home)})
    assert done.returncode == 0, done.stdout + done.stderr
    return repo / "node.zip"


def test_archive_holds_what_users_run_and_nothing_else(archive):
    names = zipfile.ZipFile(archive).namelist()
    assert {name.split("/")[0] for name in names} == SHIPPED_TOP
    shown = set(re.findall(r"\(?(docs/images/[\w.-]+\.png)", (ROOT / "README.md").read_text()))
    assert shown and shown <= set(names), f"README pictures missing: {sorted(shown - set(names))}"
    assert not [n for n in names if n.endswith("_test.py") or "/test_" in n or "probe" in n or n.endswith(".pyc")]
    assert {f"workflows/{p.name}" for p in (ROOT / "workflows").iterdir()} <= set(names)


def test_archive_installs_into_a_fresh_comfyui(archive, tmp_path):
    base = tmp_path / "base"
    pack = base / "custom_nodes" / "multires-textual-inversion"
    pack.mkdir(parents=True)
    zipfile.ZipFile(archive).extractall(pack)
    (base / "user" / "default").mkdir(parents=True)
    (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    with ComfyServer(base) as server:
        client = ComfyClient(server.url)
        info = client.get("/object_info")
        ours = {name for name, node in info.items() if node.get("python_module", "").startswith("custom_nodes.")}
        assert ours == NODES, server.log()
        templates = client.get("/workflow_templates")
        assert sorted(templates["multires-textual-inversion"]) == sorted(
            p.stem for p in (ROOT / "workflows").glob("*.json"))
        extensions = client.get("/extensions")
        assert "/extensions/multires-textual-inversion/multires.js" in extensions


# ---- ComfyUI-Manager: how its scanners find a pack's node names in the pack's repository -------------------

def _mapping_literal_names(code: str) -> set[str]:
    """Names a scanner reads from node-mapping dict literals (parsed, or matched as text) and from item
    assignments into such a mapping. (This file spells none out: the scanners read every .py file.)"""
    names = set()
    try:
        for node in ast.parse(code).body:
            if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id == "NODE_CLASS_MAPPINGS" and isinstance(node.value, ast.Dict)):
                names |= {key.value for key in node.value.keys if isinstance(key, ast.Constant)}
    except SyntaxError:
        pass
    for body in re.findall(r"_CLASS_MAPPINGS\s*=\s*\{([^}]*)\}", code, re.DOTALL):
        names |= set(re.findall(r"[\"']([^\"']*)[\"']\s*:", body))
    names |= set(re.findall(r"_CLASS_MAPPINGS\[[\"'](.*?)[\"']\]", code))
    return names


def _v3_node_ids(code: str) -> set[str]:
    return set(re.findall(r"node_id\s*=\s*[\"']([^\"']+)[\"']", code))


def _repository_python_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.split()
    return [ROOT / rel for rel in listed if (ROOT / rel).is_file()]


def test_manager_finds_the_pack_by_its_node_names_and_no_test_node():
    listed = set(json.loads((ROOT / "node_list.json").read_text()))
    assert listed == NODES
    literal, v3 = set(), set()
    for path in _repository_python_files():
        code = path.read_text(encoding="utf-8")
        literal |= _mapping_literal_names(code)
        v3 |= _v3_node_ids(code)
    assert literal <= NODES, f"mapping literals advertise {sorted(literal - NODES)}"
    assert v3 == NODES


def test_scanner_rules_would_catch_a_test_node_written_as_a_literal():
    # The rules above must see what they look for, or the test before this one could not fail.
    mapping = "NODE" + "_CLASS_MAPPINGS"
    assert _mapping_literal_names(f'{mapping} = {{"MrtiTestEmptyImageBatch": object}}\n') == {"MrtiTestEmptyImageBatch"}
    assert _mapping_literal_names(f'{mapping}["Probe"] = object\n') == {"Probe"}
    assert _v3_node_ids("io.Schema(node_" + 'id="Probe", display_name="x")') == {"Probe"}


def test_comfy_test_lint_passes(repo):
    done = subprocess.run([str(Path(sys.executable).parent / "comfy-test"), "lint"], cwd=repo, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "[SYNTAX] PASSED" in done.stdout and "[JAVASCRIPT] PASSED" in done.stdout
