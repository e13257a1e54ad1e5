"""`import mrti` must work where ComfyUI is not importable, and must not pull the host in."""
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import importlib.util, sys
assert importlib.util.find_spec("comfy") is None, "this probe needs an environment without ComfyUI"
import mrti, mrti.concept_file, mrti.prompt_syntax, mrti.schedule, mrti.step_ranges, mrti.reference_import
import mrti.training.run, mrti.ti_export, mrti.ti_import, mrti.safe_pickle
host = sorted(m for m in sys.modules if m.split(".")[0] in
              {"comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes", "server", "execution"})
assert not host, host
print("ok", len(mrti.__all__))
"""


def test_mrti_imports_without_comfyui():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")
