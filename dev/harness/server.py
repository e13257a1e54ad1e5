"""A real ComfyUI server for tests and for the dev command, plus a small HTTP client for its API.

The server runs `main.py --cpu` from the runtime that `comfy_runtime` finds, on a loopback port, with
`--base-directory` pointing at a folder that holds its models, custom_nodes, input, output and user data.
That folder's custom_nodes get a link to this package and `mrti_tiny_models.py`, a generated node module
that registers the tiny model configs and the toy world's in the server process (and, for the e2e tier only,
a link to the tests' own probe nodes, kept out of the dev server's node menu).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from dev.toyworld import model as toyworld_model

from . import comfy_runtime

PACKAGE_LINK_NAME = "multires_textual_inversion"
TOY_WORLD_CHECKPOINT = toyworld_model.CHECKPOINT

_TINY_NODE_MODULE = '''\
"""Registers the tiny SD1/SDXL model configs and the toy-world model's (written by dev/harness/server.py).
The repository goes on the path here, after ComfyUI's own `nodes` is imported: this pack's `nodes`
package would shadow it from the start of the process."""
import sys
sys.path.append({repo_dir!r})
from dev.harness import tiny_models
from dev.toyworld import model as toyworld_model
tiny_models.register()
toyworld_model.register()
NODE_CLASS_MAPPINGS = {{}}
'''


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_base_directory(base: Path, checkpoints: dict[str, Path], *, extra_nodes: Path | None = None) -> Path:
    """Lay out a ComfyUI base directory: this package and the tiny-model module in custom_nodes, the
    checkpoints and the toy-world model linked into models/checkpoints. Existing files in `base` are left alone.
    `extra_nodes`, a node module file, is linked into custom_nodes too (the tests' probe nodes)."""
    custom_nodes = base / "custom_nodes"
    custom_nodes.mkdir(parents=True, exist_ok=True)
    link = custom_nodes / PACKAGE_LINK_NAME
    if not link.exists():
        link.symlink_to(comfy_runtime.REPO_ROOT, target_is_directory=True)
    module = _TINY_NODE_MODULE.format(repo_dir=str(comfy_runtime.REPO_ROOT))
    (custom_nodes / "mrti_tiny_models.py").write_text(module)
    if extra_nodes is not None and not os.path.lexists(custom_nodes / f"mrti_{extra_nodes.name}"):
        (custom_nodes / f"mrti_{extra_nodes.name}").symlink_to(extra_nodes.resolve())
    ckpt_dir = base / "models" / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for path in [*checkpoints.values(), TOY_WORLD_CHECKPOINT]:
        target = ckpt_dir / path.name
        if not os.path.lexists(target):
            target.symlink_to(Path(path).resolve())
    for sub in ("input", "output", "temp", "user/default", "models/multires_embeddings"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    settings = base / "user" / "default" / "comfy.settings.json"
    if not settings.exists():  # no first-run template browser over the canvas
        settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    return base


@dataclass
class PromptResult:
    prompt_id: str
    history: dict

    @property
    def status(self) -> str:
        return self.history.get("status", {}).get("status_str", "")

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def error_message(self) -> str:
        for kind, data in self.history.get("status", {}).get("messages", []):
            if kind == "execution_error":
                return f"{data.get('node_type')}: {data.get('exception_message')}"
        return ""

    def images(self) -> list[dict]:
        return [img for out in self.history.get("outputs", {}).values() for img in out.get("images", [])]


class ComfyClient:
    """Just enough of ComfyUI's HTTP API: queue an API-format prompt and wait for its history entry."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.client_id = uuid.uuid4().hex

    def _request(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        try:
            return status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return status, raw

    def get(self, path: str, timeout: float = 30):
        status, body = self._request("GET", path, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"GET {path} -> {status}: {body}")
        return body

    def concepts(self, timeout: float = 120) -> dict[str, dict]:
        """entry -> summary from /mrti/concepts, asked again while the server is still reading some entries
        (it answers those with "status": "checking" rather than hold the answer)."""
        deadline = time.monotonic() + timeout
        while True:
            listed = {c["entry"]: c for c in self.get("/mrti/concepts")["concepts"]}
            if not any(c.get("status") == "checking" for c in listed.values()) or time.monotonic() > deadline:
                return listed
            time.sleep(0.1)

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base_url + path, timeout=30) as resp:
            return resp.read()

    def queue(self, prompt: dict) -> tuple[int, dict]:
        """POST /prompt; returns (HTTP status, body). A 400 carries the host's validation errors."""
        return self._request("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})

    def wait(self, prompt_id: str, timeout: float = 300) -> PromptResult:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            entry = history.get(prompt_id) if history else None
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") in ("success", "error"):
                    return PromptResult(prompt_id, entry)
            time.sleep(0.1)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s")

    def run(self, prompt: dict, timeout: float = 300) -> PromptResult:
        status, body = self.queue(prompt)
        if status != 200:
            raise RuntimeError(f"prompt rejected ({status}): {json.dumps(body)[:2000]}")
        return self.wait(body["prompt_id"], timeout)

    def image(self, info: dict) -> bytes:
        query = urllib.parse.urlencode({k: info[k] for k in ("filename", "subfolder", "type")})
        return self.get_bytes(f"/view?{query}")


class ComfyServer:
    """`main.py --cpu` in a subprocess; its combined log goes to `<base>/server.log`."""

    def __init__(self, base: Path, port: int | None = None, extra_args: tuple[str, ...] = ()):
        self.base = Path(base)
        self.port = port or free_port()
        self.extra_args = extra_args
        self.log_path = self.base / "server.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        comfy_dir = comfy_runtime.comfyui_path()
        return [sys.executable, str(comfy_dir / "main.py"), "--cpu", "--listen", "127.0.0.1",
                "--port", str(self.port), "--base-directory", str(self.base), "--disable-auto-launch",
                "--database-url", "sqlite:///:memory:", *self.extra_args]

    def start(self, timeout: float = 180) -> "ComfyServer":
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command(), cwd=self.base, env=env, stdout=self._log_file,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        client = ComfyClient(self.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                client.get("/system_stats", timeout=2)
                return self
            except (OSError, RuntimeError):
                time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log_file", None):
            self._log_file.close()

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def reset_output(base: Path) -> None:
    shutil.rmtree(base / "output", ignore_errors=True)
    (base / "output").mkdir()
