"""Where a sweep's files live: a local path (POSIX: atomic rename, `flock`) or an object store (`s3://`,
`gs://`, any `pyarrow.fs` URI), behind the handful of operations ld needs.

An object store has no rename and no locks, but a single PUT is atomic: a reader sees the whole object or
none of it. So every file ld writes is written whole -- locally a temp file renamed into place, on an object
store one upload -- and a multi-file artifact becomes visible through its manifest, uploaded last
(`ld.stages.artifact.ObjectArtifacts`). Concurrent producers of one artifact are coordinated elsewhere (a
Ray actor handing out leases, `ld.distributed.leases`), not through the storage.

An S3 endpoint other than AWS (MinIO, SeaweedFS, Ceph) is given in the URI, the way pyarrow reads it:
`s3://bucket/prefix?endpoint_override=host:port&scheme=http`; credentials come from the usual AWS chain
(`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, an instance role).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Optional, Union

AnyPath = Union[Path, PurePosixPath]
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


class StorageError(ValueError):
    """A storage root ld cannot use (bad URI, missing credentials or bucket, denied access), for the user."""


def is_remote(uri: str | Path) -> bool:
    """An object-store URI (s3://, gs://, ...), as opposed to a local path or file:// URI."""
    m = _SCHEME.match(str(uri))
    return bool(m) and m.group(1).lower() != "file"


def without_file_scheme(uri: str | Path) -> str:
    """A local path or file:// URI as a plain path string (as given: relative stays relative)."""
    s = str(uri)
    return s[len("file://"):] if s.startswith("file://") else s


def local_path(uri: str | Path) -> Path:
    return Path(without_file_scheme(uri)).expanduser().resolve()


def canonical(uri: str | Path) -> str:
    """The form every process of a sweep uses: an absolute local path, or the URI as given."""
    return str(uri) if is_remote(uri) else str(local_path(uri))


class Files:
    """File operations on one storage root. `fs` None: the local POSIX file system, exactly as ld has always
    used it (temp file + `os.replace`); otherwise a `pyarrow.fs.FileSystem` and paths inside it
    (`bucket/prefix/...`, as `PurePosixPath`)."""

    def __init__(self, fs=None):
        self.fs = fs

    @property
    def local(self) -> bool:
        return self.fs is None

    def _info(self, path: AnyPath):
        return self.fs.get_file_info(str(path))

    def is_file(self, path: AnyPath) -> bool:
        if self.local:
            return Path(path).is_file()
        import pyarrow.fs as pafs

        return self._info(path).type == pafs.FileType.File

    def is_dir(self, path: AnyPath) -> bool:
        if self.local:
            return Path(path).is_dir()
        import pyarrow.fs as pafs

        return self._info(path).type == pafs.FileType.Directory

    def read_bytes(self, path: AnyPath) -> bytes:
        if self.local:
            return Path(path).read_bytes()
        with self.fs.open_input_stream(str(path)) as f:
            return f.read()

    def read_text(self, path: AnyPath) -> str:
        return self.read_bytes(path).decode()

    def write_bytes(self, path: AnyPath, data: bytes) -> None:
        """Write a whole file atomically: a reader sees the old file, or none, or the new one."""
        if self.local:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, p)
            finally:
                if tmp.exists():
                    tmp.unlink()
            return
        with self.fs.open_output_stream(str(path)) as f:  # one PUT (multipart above pyarrow's part size)
            f.write(data)

    def write_text(self, path: AnyPath, text: str) -> None:
        self.write_bytes(path, text.encode())

    def upload(self, src: Path, path: AnyPath) -> None:
        """Copy a local file to `path` (atomic like write_bytes)."""
        if self.local:
            self.write_bytes(path, Path(src).read_bytes())
            return
        with open(src, "rb") as fin, self.fs.open_output_stream(str(path)) as fout:
            shutil.copyfileobj(fin, fout, length=8 << 20)

    def download(self, path: AnyPath, dst: Path) -> None:
        if self.local:
            shutil.copyfile(path, dst)
            return
        with self.fs.open_input_stream(str(path)) as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, length=8 << 20)

    def glob(self, folder: AnyPath, pattern: str = "*") -> list[AnyPath]:
        """Files (not folders) directly in `folder` whose name matches `pattern`, sorted; hidden files and
        temp files are left out. A missing folder has none."""
        if self.local:
            d = Path(folder)
            return sorted(p for p in d.glob(pattern) if p.is_file() and not p.name.startswith(".")) \
                if d.is_dir() else []
        import pyarrow.fs as pafs

        sel = pafs.FileSelector(str(folder), recursive=False, allow_not_found=True)
        return sorted(PurePosixPath(i.path) for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.File and not i.base_name.startswith(".")
                      and fnmatch.fnmatch(i.base_name, pattern))

    def walk_files(self, folder: AnyPath) -> list[tuple[str, int]]:
        """(path relative to `folder`, size) of every file below it."""
        if self.local:
            d = Path(folder)
            return sorted((str(p.relative_to(d)), p.stat().st_size) for p in d.rglob("*") if p.is_file()) \
                if d.is_dir() else []
        import pyarrow.fs as pafs

        base = str(folder).rstrip("/") + "/"
        sel = pafs.FileSelector(str(folder), recursive=True, allow_not_found=True)
        return sorted((i.path[len(base):], i.size) for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.File)

    def delete(self, path: AnyPath) -> None:
        if self.local:
            Path(path).unlink(missing_ok=True)
            return
        if self.is_file(path):
            self.fs.delete_file(str(path))

    def delete_dir(self, path: AnyPath) -> None:
        if self.local:
            shutil.rmtree(path, ignore_errors=True)
            return
        if self.is_dir(path):
            self.fs.delete_dir(str(path))


@functools.lru_cache(maxsize=16)
def open_root(uri: str) -> tuple[Files, AnyPath]:
    """(files, root path) of a storage root. Cached per URI: a pyarrow S3 client per process, not per call."""
    if not is_remote(uri):
        return Files(), local_path(uri)
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(str(uri))
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise StorageError(f"--storage {uri}: not a storage URI pyarrow can open ({e}); allowed are a local "
                           "path, file://, s3://bucket/prefix[?endpoint_override=host:port&scheme=http], gs://, "
                           "or another pyarrow.fs URI") from None
    path = path.rstrip("/")
    if not path:
        raise StorageError(f"--storage {uri}: names no bucket")
    return Files(fs), PurePosixPath(path)


def check_root(uri: str) -> None:
    """Fail early, with one message naming the URI and what to set, when a storage root cannot be read and
    written: a missing bucket, missing credentials, denied access. Leaves nothing behind (the probe object is
    deleted)."""
    files, root = open_root(uri)
    if files.local:
        return
    import pyarrow.fs as pafs

    bucket = str(root).split("/", 1)[0]
    creds = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run on a machine with an "
             "instance role)" if str(uri).startswith("s3") else
             "set the credentials pyarrow reads for this scheme (for gs://: GOOGLE_APPLICATION_CREDENTIALS)")

    def fail(what: str, e: Optional[BaseException]) -> StorageError:
        detail = f" ({str(e).strip().splitlines()[0]})" if e is not None else ""
        return StorageError(f"--storage {uri}: {what}{detail}")

    try:
        info = files.fs.get_file_info(bucket)
    except OSError as e:
        msg = str(e)
        if "ACCESS_DENIED" in msg or "AccessDenied" in msg or "403" in msg or "credentials" in msg.lower():
            if str(uri).startswith("s3") and not _aws_credentials_configured():
                raise fail(f"access to bucket {bucket!r} denied and no AWS credentials are configured here: "
                           f"{creds}", e) from None
            raise fail(f"access to bucket {bucket!r} denied: {creds}", e) from None
        raise fail(f"cannot reach the object store; check the endpoint (endpoint_override=...) and {creds}",
                   e) from None
    if info.type == pafs.FileType.NotFound:
        raise fail(f"bucket {bucket!r} does not exist (create it first, e.g. `aws s3 mb s3://{bucket}`)", None)
    probe = root / f".ld-probe-{uuid.uuid4().hex[:12]}"
    try:
        files.write_bytes(probe, b"ld storage probe\n")
        files.delete(probe)
    except OSError as e:
        msg = str(e)
        what = (f"writing under it was denied: {creds} with write access to {bucket!r}"
                if "ACCESS_DENIED" in msg or "AccessDenied" in msg or "403" in msg
                else "cannot write under it")
        raise fail(what, e) from None


def _aws_credentials_configured() -> bool:
    """Whether this process has AWS credentials of its own (environment, profile or shared file); an instance
    role cannot be seen from here, so this only sharpens the message of a refusal."""
    if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE") or \
            os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE") or os.environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        return True
    shared = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials")
    return os.path.isfile(shared)
