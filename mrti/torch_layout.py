"""The two layouts of ``torch.save`` files, checked with plain file reads before torch opens one: which
pickles a file holds (each walked under ``pickle_scan``'s bounds) and whether the tensor data their storage
references declare is really in the file.

- The zip archive (torch 1.6 and later): members ``<folder>/data.pkl`` (the pickle), ``<folder>/data/<key>``
  (one per storage, stored uncompressed) and a few small ones. The member count is read from the archive's
  end record before any member is listed: listing 200,000 members costs 90 MB and seconds.
- The old format: five pickles in a row (torch's magic number, its protocol version, system info, the
  object, the list of storage keys), then for each key an 8-byte element count and the raw elements.
  torch allocates each storage at the size its reference declares before reading the data, so a reference
  claiming a billion floats is refused here, with its size in words, instead of there.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import ConceptFileError, shown
from .pickle_scan import MAX_PICKLE_BYTES, Global, PickleBudget, scan_pickle

# A reference text encoder has a few hundred tensors, one member each (522 for a 32-layer encoder).
MAX_ARCHIVE_MEMBERS = 5_000
# torch.serialization's MAGIC_NUMBER and PROTOCOL_VERSION, which begin every old-format file.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
_ELEMENT_BYTES = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
                  "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
                  "BoolStorage": 1, "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16}
_END_RECORD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END_RECORD = b"PK\x06\x06"


@dataclass(frozen=True)
class StorageRef:
    key: str
    type_name: str
    numel: int

    @property
    def element_bytes(self) -> int | None:
        return _ELEMENT_BYTES.get(self.type_name)

    def describe(self) -> str:
        size = f" ({self.numel * self.element_bytes:,} bytes)" if self.element_bytes else ""
        return f"tensor data {shown(self.key)} is declared as {self.numel:,} values{size}"


def _storage_refs(path: Path, persistent_ids: list, arity: int) -> dict[str, StorageRef]:
    refs: dict[str, StorageRef] = {}
    for pid in persistent_ids:
        if not (isinstance(pid, tuple) and len(pid) == arity and pid[0] == "storage"):
            continue  # not a storage reference; torch's unpickler decides what it is
        _, kind, key, _, numel = pid[:5]
        if not (isinstance(kind, Global) and isinstance(key, str) and isinstance(numel, int)) or numel < 0:
            raise ConceptFileError(path, f"holds a malformed tensor data reference {shown(pid)}")
        known = refs.get(key)
        if known is not None and known.numel != numel:
            raise ConceptFileError(path, f"tensor data {shown(key)} is declared with two sizes, {known.numel:,} "
                                         f"and {numel:,} values")
        refs[key] = StorageRef(key, kind.name, numel)
    return refs


def zip_member_count(handle: BinaryIO, size: int) -> int | None:
    """The member count an archive's end record declares, read without listing any member; None when the
    record is not found (zipfile then says what is wrong)."""
    tail_length = min(size, 22 + 65_535)
    handle.seek(size - tail_length)
    tail = handle.read(tail_length)
    at = tail.rfind(_END_RECORD)
    if at < 0 or at + 22 > len(tail):
        return None
    count = int.from_bytes(tail[at + 10:at + 12], "little")
    locator = tail[at - 20:at] if at >= 20 else b""
    if count == 0xFFFF and locator.startswith(_ZIP64_LOCATOR):
        handle.seek(int.from_bytes(locator[8:16], "little"))
        record = handle.read(56)
        if record.startswith(_ZIP64_END_RECORD):
            count = int.from_bytes(record[32:40], "little")
    return count


def check_zip(path: Path, handle: BinaryIO, size: int) -> None:
    """Refuses an archive torch.save would not write, or whose pickle or tensor data fail the bounds."""
    count = zip_member_count(handle, size)
    if count is not None and count > MAX_ARCHIVE_MEMBERS:
        raise ConceptFileError(path, f"is a zip archive of {count:,} members; a PyTorch weights file of an "
                                     f"embedding or a text encoder has one per tensor, and at most "
                                     f"{MAX_ARCHIVE_MEMBERS:,} are accepted")
    handle.seek(0)
    try:
        with zipfile.ZipFile(handle) as archive:
            members = archive.infolist()
            pickle_member = _check_members(path, members)
            data = archive.open(pickle_member).read(MAX_PICKLE_BYTES + 1)
    except ConceptFileError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ConceptFileError(path, f"not a readable PyTorch weights file ({exc})") from None
    what = f"its pickle {shown(pickle_member.filename)}"
    scan = scan_pickle(path, data, 0, what, PickleBudget())
    sizes = {member.filename: member.file_size for member in members}
    folder = pickle_member.filename.rsplit("/", 1)[0]
    for ref in _storage_refs(path, scan.persistent_ids, 5).values():
        stored = sizes.get(f"{folder}/data/{ref.key}")
        if stored is None:
            raise ConceptFileError(path, f"{ref.describe()}, but the archive has no member holding it")
        if ref.numel * (ref.element_bytes or 1) > stored:
            raise ConceptFileError(path, f"{ref.describe()}, but its member holds {stored:,} bytes")


def _check_members(path: Path, members: list[zipfile.ZipInfo]) -> zipfile.ZipInfo:
    """The archive's pickle member, after refusing what torch.save never writes."""
    for member in members:
        # A compressed member would be inflated in memory whatever its declared size.
        if member.compress_type != zipfile.ZIP_STORED:
            raise ConceptFileError(path, f"archive member {shown(member.filename)} is compressed; torch.save "
                                         "never compresses, so this is not a PyTorch weights file")
    if not members or "/" not in members[0].filename:
        raise ConceptFileError(path, "is a zip archive but not a PyTorch weights file (torch.save puts every "
                                     "member in one folder)")
    folder = members[0].filename.split("/", 1)[0]
    by_name = {member.filename: member for member in members}
    if f"{folder}/constants.pkl" in by_name:
        raise ConceptFileError(path, "is a TorchScript archive (a saved program), not a weights file")
    pickle_member = by_name.get(f"{folder}/data.pkl")
    if pickle_member is None:
        raise ConceptFileError(path, f"is a zip archive without {folder}/data.pkl, so not a PyTorch weights file")
    if pickle_member.file_size > MAX_PICKLE_BYTES:
        raise ConceptFileError(path, f"its pickle {shown(pickle_member.filename)} is {pickle_member.file_size:,} "
                                     f"bytes; an embedding's or a text encoder's is under 100 KB, and at most "
                                     f"{MAX_PICKLE_BYTES:,} are read")
    return pickle_member


def check_legacy(path: Path, handle: BinaryIO, size: int) -> None:
    """Refuses an old-format file whose pickles fail the bounds or whose tensor data is not all there."""
    handle.seek(0)
    data = handle.read(min(size, MAX_PICKLE_BYTES))
    budget = PickleBudget()
    try:
        magic = scan_pickle(path, data, 0, "its start", budget)
    except ConceptFileError:
        magic = None
    if magic is not None and magic.globals and magic.value != LEGACY_MAGIC:
        names = ", ".join(sorted({f"{g.module}.{g.name}" if isinstance(g, Global) else "?" for g in magic.globals}))
        raise ConceptFileError(path, f"refused to load as unsafe: it is a plain pickle, not a PyTorch weights "
                                     f"file, and it asks for {shown(names, 200)}, which could run code")
    try:
        version = scan_pickle(path, data, magic.end, "its start", budget) if magic else None
    except ConceptFileError:
        version = None
    if magic is None or magic.value != LEGACY_MAGIC or version is None or version.value != LEGACY_PROTOCOL:
        raise ConceptFileError(path, "not a readable PyTorch weights file: it is neither a zip archive nor a file "
                                     "in torch.save's old format (which begins with torch's magic number)")
    info = scan_pickle(path, data, version.end, "its system-info pickle", budget)
    body = scan_pickle(path, data, info.end, "its pickle", budget)
    keys = scan_pickle(path, data, body.end, "its list of tensor data", budget)
    refs = _storage_refs(path, body.persistent_ids, 6)
    _walk_legacy_data(path, handle, size, keys.end, keys.strings, refs)


def _walk_legacy_data(path: Path, handle: BinaryIO, size: int, offset: int, keys: list[str],
                      refs: dict[str, StorageRef]) -> None:
    missing = set(refs) - set(keys)
    if missing:
        raise ConceptFileError(path, f"a tensor refers to tensor data {shown(min(missing))}, which the file "
                                     "does not hold")
    for key in keys:
        ref = refs.get(key)
        if ref is None:
            raise ConceptFileError(path, f"lists tensor data {shown(key)} that no tensor uses")
        if ref.element_bytes is None:
            raise ConceptFileError(path, f"tensor data {shown(key)} is of type {shown(ref.type_name)}, which no "
                                         "embedding or text encoder uses")
        handle.seek(offset)
        header = handle.read(8)
        count = int.from_bytes(header, "little", signed=True) if len(header) == 8 else -1
        if count != ref.numel:
            held = "its size field is cut short" if count < 0 else f"the file holds {count:,}"
            raise ConceptFileError(path, f"{ref.describe()}, but {held}: the file is damaged or was not "
                                         "written by torch.save")
        offset += 8 + count * ref.element_bytes
        if offset > size:
            raise ConceptFileError(path, f"{ref.describe()}, but the file ends {offset - size:,} bytes short of "
                                         "it: the file is cut short or was not written by torch.save")
