"""The value the export and trainer nodes give the host's cache (nodes/produced_files.py): the same before
and after the run that wrote the files, so that the next queue is served from the cache; different, once,
when a file is deleted or changed; and it settles again after the run that writes them anew. The server
round trip is tests/e2e/test_rerun_after_delete_api.py."""
from __future__ import annotations

import os


def test_the_value_moves_once_per_deletion_or_change(host_package, tmp_path):
    ledger = host_package.nodes.produced_files.ProducedFiles()
    files = [tmp_path / "a_s0.safetensors", tmp_path / "a_s1.safetensors"]
    before_first_run = ledger.fingerprint("5", "a")
    for path in files:
        path.write_bytes(b"x")
    ledger.record("5", "a", files)
    assert ledger.fingerprint("5", "a") == before_first_run  # the second queue: cached

    files[0].unlink()
    deleted = ledger.fingerprint("5", "a")
    assert deleted != before_first_run
    assert ledger.fingerprint("5", "a") == deleted  # until a run writes them again, the value stays
    files[0].write_bytes(b"x")
    ledger.record("5", "a", files)
    assert ledger.fingerprint("5", "a") == deleted  # the queue after that run: cached

    files[1].write_bytes(b"longer")  # changed in place
    changed = ledger.fingerprint("5", "a")
    assert changed != deleted

    ledger.record("5", "a", files)
    stat = files[1].stat()
    os.utime(files[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # same size, newer mtime
    assert ledger.fingerprint("5", "a") != changed


def test_other_nodes_and_linked_widgets(host_package, tmp_path):
    module = host_package.nodes.produced_files
    ledger = module.ProducedFiles()
    path = tmp_path / "b_s0.safetensors"
    path.write_bytes(b"x")
    ledger.record("5", "b", [path])
    others = (ledger.fingerprint("6", "b"), ledger.fingerprint("5", "c"))
    linked = ledger.fingerprint("5", None)  # the widget was linked: the host passes None
    path.unlink()
    assert ledger.fingerprint("5", None) != linked, "a node whose name widget is linked must see it too"
    assert (ledger.fingerprint("6", "b"), ledger.fingerprint("5", "c")) == others
    assert module.widget_value(["  name "]) == "name" and module.widget_value((None,)) is None
    assert module.widget_value(None) is None and module.current_node() is None
