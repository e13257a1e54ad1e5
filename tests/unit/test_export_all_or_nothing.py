"""A concept's export is one set (mrti/file_set.py): a disk that fills part way, a rename that fails while the
set is moved into place, and a second exporter of the same name (a thread, another process) never leave a
partial or mixed set behind."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mrti_factories import make_concept

from mrti import file_set, ti_export
from mrti.errors import ConceptFileError, ConceptFileExistsError

REPO = Path(__file__).resolve().parents[2]


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def tensor_bytes(data: bytes) -> bytes:
    # The header's metadata comes in no fixed order (safetensors writes a hash map): compare the tensors.
    return data[8 + int.from_bytes(data[:8], "little"):]


def exported_bytes(concept, tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("reference")
    ti_export.export_concept(concept, folder)
    return {name: tensor_bytes(data) for name, data in contents(folder).items()}


def disk_full_at(monkeypatch, index: int) -> None:
    """The disk fills while staged file ``index`` is written, half of it on disk."""
    real, calls = file_set._write_staged, []

    def write(path, data):
        calls.append(path)
        if len(calls) - 1 == index:
            real(path, data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(file_set, "_write_staged", write)


@pytest.mark.parametrize("index", [0, 64, 99])
def test_a_disk_full_part_way_leaves_nothing(tmp_path, monkeypatch, index):
    disk_full_at(monkeypatch, index)
    with pytest.raises(ConceptFileError, match="No space left on device") as caught:
        ti_export.export_concept(make_concept(num_scales=100), tmp_path)
    assert f"jane_s{index}.safetensors" in str(caught.value) and "nothing was written" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_a_disk_full_part_way_keeps_the_earlier_set(tmp_path, monkeypatch):
    ti_export.export_concept(make_concept(num_scales=100, seed=1), tmp_path)
    before = contents(tmp_path)
    disk_full_at(monkeypatch, 64)
    with pytest.raises(ConceptFileError, match="jane_s64.safetensors: cannot write it: No space left"):
        ti_export.export_concept(make_concept(num_scales=100, seed=2), tmp_path, overwrite=True)
    assert contents(tmp_path) == before


def test_a_failed_move_into_place_puts_the_earlier_set_back(tmp_path, monkeypatch):
    ti_export.export_concept(make_concept(num_scales=10, seed=1), tmp_path)
    before = contents(tmp_path)
    real, placed = file_set._place, []

    def place(staged, target):
        if len(placed) == 6:
            raise OSError(5, "Input/output error")
        real(staged, target)
        placed.append(target)

    monkeypatch.setattr(file_set, "_place", place)
    with pytest.raises(ConceptFileError, match="jane_s6.safetensors: cannot move it into place: Input/output"):
        ti_export.export_concept(make_concept(num_scales=10, seed=2), tmp_path, overwrite=True)
    assert contents(tmp_path) == before


def test_earlier_files_that_cannot_be_put_back_are_kept_and_named(tmp_path, monkeypatch):
    ti_export.export_concept(make_concept(num_scales=3, seed=1), tmp_path)
    before = contents(tmp_path)
    monkeypatch.setattr(file_set, "_place", lambda staged, target: (_ for _ in ()).throw(OSError(5, "I/O error")))
    real_rename = os.rename

    def rename(source, target):
        if str(source).endswith(file_set.ASIDE_SUFFIX):
            raise OSError(13, "Permission denied")
        real_rename(source, target)

    monkeypatch.setattr(file_set.os, "rename", rename)
    with pytest.raises(ConceptFileError, match="cannot put back jane_s0.safetensors") as caught:
        ti_export.export_concept(make_concept(num_scales=3, seed=2), tmp_path, overwrite=True)
    (staging,) = [p for p in tmp_path.iterdir() if p.name.endswith(".staging")]
    assert str(staging) in str(caught.value)
    kept = sorted(p.read_bytes() for p in staging.iterdir() if p.name.endswith(file_set.ASIDE_SUFFIX))
    assert kept == sorted(before.values())


def test_overwrite_replaces_an_earlier_set_of_more_scales_as_a_whole(tmp_path):
    ti_export.export_concept(make_concept(num_scales=12, seed=1), tmp_path)
    (tmp_path / "jane_s20.safetensors").write_bytes(b"not an export")  # not ours: never touched
    (tmp_path / "jane_s12x.safetensors").write_bytes(b"another name")
    with pytest.raises(ConceptFileExistsError, match="jane_s0.safetensors"):
        ti_export.export_concept(make_concept(num_scales=10, seed=2), tmp_path)
    ti_export.export_concept(make_concept(num_scales=10, seed=2), tmp_path, overwrite=True)
    assert sorted(contents(tmp_path)) == sorted([f"jane_s{i}.safetensors" for i in range(10)]
                                                + ["jane_s20.safetensors", "jane_s12x.safetensors"])


def test_without_overwrite_an_earlier_sets_extra_scales_refuse(tmp_path):
    ti_export.export_concept(make_concept(num_scales=5, seed=1), tmp_path)
    for i in range(3):
        (tmp_path / f"jane_s{i}.safetensors").unlink()
    with pytest.raises(ConceptFileExistsError, match="jane_s3.safetensors: an earlier export of 'jane'"):
        ti_export.export_concept(make_concept(num_scales=3, seed=2), tmp_path)
    assert sorted(contents(tmp_path)) == ["jane_s3.safetensors", "jane_s4.safetensors"]


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def test_a_held_lock_refuses_naming_it_and_its_holder(tmp_path):
    lock = ti_export.lock_path(tmp_path, "jane")
    lock.write_text(f"{os.getpid()} {socket.gethostname()}\n")
    with pytest.raises(ConceptFileError, match="another export of 'jane' is writing") as caught:
        ti_export.export_concept(make_concept(), tmp_path, overwrite=True)
    assert str(lock) in str(caught.value) and f"process {os.getpid()}" in str(caught.value)
    assert sorted(contents(tmp_path)) == [lock.name]


@pytest.mark.skipif(os.name == "nt", reason="locks are never taken over on Windows")
def test_a_lock_left_by_a_process_that_is_gone_is_taken_over(tmp_path):
    lock = ti_export.lock_path(tmp_path, "jane")
    lock.write_text(f"{dead_pid()} {socket.gethostname()}\n")
    ti_export.export_concept(make_concept(num_scales=2), tmp_path)
    assert sorted(contents(tmp_path)) == ["jane_s0.safetensors", "jane_s1.safetensors"]


def test_an_empty_lock_counts_as_held_until_it_is_old(tmp_path):
    lock = ti_export.lock_path(tmp_path, "jane")
    lock.write_text("")
    with pytest.raises(ConceptFileError, match="has not said who it is"):
        ti_export.export_concept(make_concept(num_scales=2), tmp_path)
    old = time.time() - 3600
    os.utime(lock, (old, old))
    ti_export.export_concept(make_concept(num_scales=2), tmp_path)
    assert not lock.exists()


def test_a_disk_too_full_for_the_lock_leaves_nothing(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(file_set.os, "write", full)
    with pytest.raises(ConceptFileError, match=r"\.jane\.export\.lock: cannot take the lock for the export of "
                                               "'jane': No space left on device; nothing was written"):
        ti_export.export_concept(make_concept(num_scales=2), tmp_path)
    assert list(tmp_path.iterdir()) == []


def one_source(folder: Path, sources: list[dict[str, bytes]]) -> int:
    """Which of ``sources`` the folder holds, exactly and completely; fails on a mixed or partial set."""
    now = {name: tensor_bytes(data) for name, data in contents(folder).items() if name.startswith("jane_s")}
    matches = [i for i, source in enumerate(sources) if now == source]
    assert len(matches) == 1, f"a mixed or partial set: {len(now)} files"
    assert not [p for p in folder.iterdir() if not p.name.startswith("jane_s")], "staging or lock left behind"
    return matches[0]


def test_two_threads_exporting_one_name_never_interleave(tmp_path, tmp_path_factory, monkeypatch):
    concepts = [make_concept(num_scales=40, seed=s) for s in (1, 2)]
    sources = [exported_bytes(c, tmp_path_factory) for c in concepts]
    real = file_set._write_staged

    def slow(path, data):  # widens the window in which the two exports overlap
        time.sleep(0.001)
        real(path, data)

    monkeypatch.setattr(file_set, "_write_staged", slow)
    refusals = 0
    for _ in range(5):
        outcomes = [None, None]
        start = threading.Barrier(2)

        def run(i, start=start, outcomes=outcomes):
            start.wait()
            try:
                ti_export.export_concept(concepts[i], tmp_path, overwrite=True)
                outcomes[i] = "ok"
            except ConceptFileError as exc:
                outcomes[i] = "refused" if "another export of 'jane' is writing" in str(exc) else f"failed {exc}"

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert set(outcomes) <= {"ok", "refused"} and "ok" in outcomes, outcomes
        refusals += outcomes.count("refused")
        winner = one_source(tmp_path, sources)
        if outcomes.count("ok") == 1:
            assert outcomes[winner] == "ok"
    assert refusals, "the two exports never overlapped: nothing was tested"


_WORKER = """
import sys, time
from pathlib import Path
from mrti import file_set, ti_export
from mrti.errors import ConceptFileError
from mrti_factories import make_concept
folder, seed, go = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
concept = make_concept(num_scales=40, seed=seed)
real = file_set._write_staged
def slow(path, data):
    time.sleep(0.002)
    real(path, data)
file_set._write_staged = slow
print("ready", flush=True)
while not go.exists():
    time.sleep(0.0005)
try:
    ti_export.export_concept(concept, folder, overwrite=True)
    print("ok")
except ConceptFileError as exc:
    print("refused" if "another export of 'jane' is writing" in str(exc) else f"failed {exc}")
"""


def test_two_processes_exporting_one_name_never_interleave(tmp_path, tmp_path_factory):
    """As two servers on one models folder: separate processes, the lock file the only thing they share."""
    sources = [exported_bytes(make_concept(num_scales=40, seed=s), tmp_path_factory) for s in (1, 2)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests" / "unit")]),
           "OMP_NUM_THREADS": "1"}
    folder = tmp_path / "embeddings"
    folder.mkdir()
    outcomes = []
    for trial in range(3):
        go = tmp_path / f"go{trial}"
        workers = [subprocess.Popen([sys.executable, "-c", _WORKER, str(folder), str(seed), str(go)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                   for seed in (1, 2)]
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready", worker.stderr.read()
        go.touch()
        results = []
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
            results.append(out.strip())
        assert set(results) <= {"ok", "refused"} and "ok" in results, results
        winner = one_source(folder, sources)
        if results.count("ok") == 1:
            assert results[winner] == "ok"
        outcomes += results
    assert "refused" in outcomes, "the two exports never overlapped: nothing was tested"
