"""Where record ciphertexts live: a content-addressed local directory or an IPFS (Kubo) node.

Locators are CIDv1 *bytes* (the form stored on-chain). Both stores return the CID of what they
stored; the gateway additionally keeps ``sha256(ciphertext)`` on-chain (``contentHash``) and checks
it after every ``get``, so even a store that cannot verify what it returns (a multi-block IPFS DAG)
never hands unverified bytes to a client.

CIDs and the local layout are :mod:`node_client.blobs` (the one implementation, which the auditor uses
too); its :class:`~node_client.blobs.InvalidCid` reaches callers here as :class:`InvalidLocator`.

Error tree::

    BlobStoreError
    ├── StorageUnavailable   directory missing/unwritable/not a directory, IPFS daemon down
    ├── StorageFull          ENOSPC / EDQUOT / EFBIG while writing (nothing partial is left)
    ├── BlobNotFound         no blob for that locator
    ├── InvalidLocator       malformed CID, other codec/hash, wrong type, traversal attempts
    └── IntegrityMismatch    stored bytes do not hash to the CID (corruption, lying daemon)
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

import ipfshttpclient
import ipfshttpclient.exceptions as ipfs_exc

from gateway.crashpoints import crashpoint
from gateway.settings import GatewaySettings, StoreKind
from gateway.storage.fs import fsync_dir
from node_client import blobs as cids
from node_client.blobs import CODEC_DAG_PB, CODEC_RAW, cid_v1_raw

__all__ = [
    "CODEC_DAG_PB",
    "CODEC_RAW",
    "IPFS_CHUNK_SIZE",
    "BlobNotFound",
    "BlobStore",
    "BlobStoreError",
    "IntegrityMismatch",
    "InvalidLocator",
    "IpfsBlobStore",
    "LocalBlobStore",
    "StorageFull",
    "StorageUnavailable",
    "api_multiaddr",
    "cid_from_str",
    "cid_to_str",
    "cid_v1_raw",
    "make_store",
    "sha256_of_cid",
    "validate_cid",
]

IPFS_CHUNK_SIZE = 262_144
"""Chunk size passed explicitly to ``ipfs add`` (Kubo's classic default): blobs up to this size
are one raw block whose CID equals :func:`cid_v1_raw`; larger ones become a dag-pb root. Passing
it explicitly makes CIDs independent of the daemon's ``Import.UnixFSChunker`` setting."""


class BlobStoreError(Exception):
    """Root of every error this module raises on purpose."""


class StorageUnavailable(BlobStoreError):
    """The store cannot be used right now (directory missing, not a directory, permission denied,
    read-only, I/O error; IPFS daemon down or timing out). Callers should fail closed / retry."""


class StorageFull(BlobStoreError):
    """No space (ENOSPC), quota exceeded (EDQUOT) or file-size limit (EFBIG) while writing."""


class BlobNotFound(BlobStoreError):
    """The store is working but holds no blob for that locator."""


class InvalidLocator(BlobStoreError, ValueError):
    """Not a CID of the one accepted format (see module doc), or not usable by this store."""


class IntegrityMismatch(BlobStoreError):
    """Bytes read (or a CID returned by IPFS) do not match the CID: corruption or a lying backend."""


# --------------------------------------------------------------------------------------------
# CIDs
# --------------------------------------------------------------------------------------------


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _locator_errors(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn`` with :class:`~node_client.blobs.InvalidCid` raised as this module's :class:`InvalidLocator`."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except cids.InvalidCid as exc:
            raise InvalidLocator(str(exc)) from None

    return wrapper


validate_cid = _locator_errors(cids.validate_cid)
cid_to_str = _locator_errors(cids.cid_to_str)
cid_from_str = _locator_errors(cids.cid_from_str)
sha256_of_cid = _locator_errors(cids.sha256_of_cid)
_local_blob_path = _locator_errors(cids.local_blob_path)


# --------------------------------------------------------------------------------------------
# Protocol
# --------------------------------------------------------------------------------------------


@runtime_checkable
class BlobStore(Protocol):
    """What the gateway needs from a ciphertext store. Locators are CIDv1 bytes."""

    name: str
    #: whether ``get`` talks to another process over the network (may stall): then it must not run on
    #: the event loop (see ``gateway.services.releases.release_async``)
    remote: bool

    def put(self, data: bytes) -> bytes:
        """Stores ``data`` durably; returns its locator. Idempotent for identical bytes."""
        ...

    def get(self, locator: bytes) -> bytes:
        """The bytes stored under ``locator`` (:class:`BlobNotFound` if none)."""
        ...

    def delete(self, locator: bytes) -> None:
        """Forgets ``locator``; deleting something absent is not an error."""
        ...

    def exists(self, locator: bytes) -> bool:
        """Whether the store currently holds (keeps) ``locator``."""
        ...

    def check(self) -> None:
        """Raises :class:`StorageUnavailable` unless the store can be read and written now."""
        ...

    def locators(self) -> list[bytes]:
        """Every locator the store holds (for ``hcl gateway reconcile``)."""
        ...


# --------------------------------------------------------------------------------------------
# Local directory
# --------------------------------------------------------------------------------------------

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_TMP_PREFIX = ".tmp-"


def _os_error(exc: OSError, action: str) -> BlobStoreError:
    # Only the errno and the operation go into the message; paths are ours, never user input.
    reason = exc.strerror or type(exc).__name__
    if exc.errno in _FULL_ERRNOS:
        return StorageFull(f"{action}: {reason} (errno {exc.errno})")
    return StorageUnavailable(f"{action}: {reason} (errno {exc.errno})")


class LocalBlobStore:
    """Content-addressed directory: ``<root>/<2 chars>/<cid string>``, one file per blob.

    * **Fan-out** uses the *next-to-last two* characters of the CID string (Kubo's flatfs
      ``next-to-last/2`` scheme): every raw sha2-256 CID starts with ``bafkrei``, so the *first*
      two characters would put everything in one ``ba/`` directory; the tail is digest-derived
      (the very last character carries only 3 data bits, hence next-to-last). 1024 shards.
    * **Paths come only from validated CIDs** re-encoded by :func:`cid_to_str` (59 characters of
      ``[a-z2-7]``), never from caller strings, so traversal (``..``, ``/``) cannot be expressed.
    * **Writes are atomic and durable**: temp file in the shard directory → ``fsync`` →
      ``os.replace`` → ``fsync`` of the directory. A crash leaves either nothing or the whole
      blob (plus at worst a ``.tmp-*`` file, see :meth:`cleanup_temp`); a full disk leaves nothing.
    * **Reads are verified**: the SHA-256 of what was read must equal the CID digest.
    * The root must already exist unless ``create=True``: auto-creating it would hide an unmounted
      volume (blobs would silently land on the root filesystem).
    """

    name = "local"
    remote = False

    def __init__(self, root: str | os.PathLike[str], *, create: bool = False) -> None:
        self.root = Path(root)
        if create:
            try:
                self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise _os_error(exc, "cannot create blob store root") from None
        # No other I/O here: a store object can be built before its volume is ready; check() tells.

    def __repr__(self) -> str:
        return f"LocalBlobStore(root={str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------------

    @staticmethod
    def _local_cid(locator: object) -> bytes:
        cid = validate_cid(locator)
        if cid[1] != CODEC_RAW:
            raise InvalidLocator("the local store holds only raw-codec CIDs")
        return cid

    def _path(self, cid: bytes) -> Path:
        return _local_blob_path(self.root, cid)

    def _require_root(self) -> None:
        try:
            st = os.stat(self.root)
        except OSError as exc:
            raise _os_error(exc, "blob store root is not accessible") from None
        if not stat.S_ISDIR(st.st_mode):
            raise StorageUnavailable("blob store root is not a directory")

    # -- BlobStore -----------------------------------------------------------------------------

    def put(self, data: bytes) -> bytes:
        """Stores ``data``; identical bytes already present (same size) are not rewritten."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes")
        data = bytes(data)
        cid = cid_v1_raw(data)
        final = self._path(cid)
        try:
            st = os.stat(final)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _os_error(exc, "cannot stat blob") from None
        else:
            if stat.S_ISREG(st.st_mode) and st.st_size == len(data):
                return cid  # same content address, same size: already stored (no duplicate write)
            # wrong size (corrupt/truncated by something outside us): rewrite it atomically below
        self._require_root()
        shard = final.parent
        try:
            shard.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise _os_error(exc, "cannot create shard directory") from None
        else:
            fsync_dir(self.root)
        self._write_atomic(shard, final, data)
        return cid

    def _write_atomic(self, shard: Path, final: Path, data: bytes) -> None:
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=shard)
        except OSError as exc:
            raise _os_error(exc, "cannot create temporary blob file") from None
        tmp = Path(tmp_name)
        try:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            crashpoint("blob.after_temp_write")
            os.replace(tmp, final)
            crashpoint("blob.after_rename")
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _os_error(exc, "cannot write blob") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        try:
            fsync_dir(shard)
        except OSError as exc:
            raise _os_error(exc, "cannot sync blob directory") from None

    def get(self, locator: bytes) -> bytes:
        """Reads and verifies a blob; corruption raises :class:`IntegrityMismatch`."""
        cid = self._local_cid(locator)
        try:
            with open(self._path(cid), "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            self._require_root()
            raise BlobNotFound(f"no blob {cid_to_str(cid)}") from None
        except OSError as exc:
            raise _os_error(exc, "cannot read blob") from None
        if hashlib.sha256(data).digest() != sha256_of_cid(cid):
            raise IntegrityMismatch(f"stored blob {cid_to_str(cid)} does not match its CID (corrupted)")
        return data

    def delete(self, locator: bytes) -> None:
        """Removes a blob; absent blobs are fine (idempotent)."""
        cid = self._local_cid(locator)
        path = self._path(cid)
        try:
            os.unlink(path)
        except FileNotFoundError:
            self._require_root()
            return
        except OSError as exc:
            raise _os_error(exc, "cannot delete blob") from None
        crashpoint("blob.after_delete")
        try:
            fsync_dir(path.parent)
        except OSError as exc:
            raise _os_error(exc, "cannot sync blob directory") from None

    def exists(self, locator: bytes) -> bool:
        """Whether a blob file is present (not verified; :meth:`get` verifies)."""
        cid = self._local_cid(locator)
        try:
            st = os.stat(self._path(cid))
        except FileNotFoundError:
            self._require_root()
            return False
        except OSError as exc:
            raise _os_error(exc, "cannot stat blob") from None
        return stat.S_ISREG(st.st_mode)

    def check(self) -> None:
        """Proves the root is a writable directory by creating, syncing and removing a probe file.

        A real write rather than ``os.access``: access checks lie for root, read-only mounts and
        full disks. A full disk makes ``check`` raise :class:`StorageFull` (also "not usable").
        """
        self._require_root()
        try:
            fd, name = tempfile.mkstemp(prefix=_TMP_PREFIX + "probe-", dir=self.root)
        except OSError as exc:
            raise _os_error(exc, "blob store root is not writable") from None
        try:
            try:
                os.write(fd, b"\0")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _os_error(exc, "blob store root is not writable") from None
        finally:
            Path(name).unlink(missing_ok=True)

    # -- maintenance ---------------------------------------------------------------------------

    def locators(self) -> list[bytes]:
        """Every blob in the store (by file name; not verified), for ``hcl gateway reconcile``."""
        self._require_root()
        out = []
        try:
            for shard in self.root.iterdir():
                if not shard.is_dir() or shard.name.startswith(_TMP_PREFIX):
                    continue
                for f in shard.iterdir():
                    try:
                        cid = cid_from_str(f.name)
                    except InvalidLocator:
                        continue  # temp files and anything that is not ours
                    if cid[1] == CODEC_RAW and self._path(cid) == f:
                        out.append(cid)
        except OSError as exc:
            raise _os_error(exc, "cannot list the blob store") from None
        return out

    def cleanup_temp(self, *, older_than: float = 3600.0) -> int:
        """Removes ``.tmp-*`` files left by crashed writers that are older than ``older_than`` s.

        Age-gated so a concurrent writer's live temp file is never removed. Returns the count.
        """
        self._require_root()
        cutoff = time.time() - older_than
        removed = 0
        for candidate in list(self.root.glob(_TMP_PREFIX + "*")) + list(self.root.glob("*/" + _TMP_PREFIX + "*")):
            try:
                if candidate.stat().st_mtime < cutoff:
                    candidate.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _os_error(exc, "cannot remove temporary file") from None
        return removed


# --------------------------------------------------------------------------------------------
# IPFS (Kubo RPC API)
# --------------------------------------------------------------------------------------------

_T = TypeVar("_T")


def api_multiaddr(api_url: str) -> str:
    """Normalises an RPC API address to the multiaddr form ``ipfshttpclient.Client`` takes.

    Accepts a multiaddr (``/ip4/127.0.0.1/tcp/5001`` with optional ``/http`` or ``/https``) or a
    URL (``http://127.0.0.1:5001``, optionally ending in ``/api/v0``). ``ipfshttpclient.connect()``
    is deliberately not used: it rejects every Kubo newer than 0.8 by version number.
    """
    if not isinstance(api_url, str) or not api_url.strip():
        raise BlobStoreError("IPFS API address must be a non-empty string")
    api_url = api_url.strip()
    if api_url.startswith("/"):
        parts = api_url.rstrip("/").split("/")
        if len(parts) == 5:
            parts.append("http")
        if (
            len(parts) != 6
            or parts[1] not in ("ip4", "ip6", "dns", "dns4", "dns6")
            or parts[3] != "tcp"
            or not parts[4].isdigit()
            or parts[5] not in ("http", "https")
        ):
            raise BlobStoreError(f"unsupported IPFS API multiaddr {api_url!r} (want /ip4/<host>/tcp/<port>[/http])")
        return "/".join(parts)
    split = urlsplit(api_url)
    if split.scheme not in ("http", "https") or not split.hostname or split.port is None:
        raise BlobStoreError(f"unsupported IPFS API URL {api_url!r} (want http://<host>:<port>)")
    if split.path not in ("", "/", "/api/v0", "/api/v0/"):
        raise BlobStoreError("IPFS API URL must not have a path other than /api/v0")
    host = split.hostname
    if ":" in host:
        proto = "ip6"
    elif re.fullmatch(r"\d{1,3}(?:\.\d{1,3}){3}", host):
        proto = "ip4"
    else:
        proto = "dns"
    return f"/{proto}/{host}/tcp/{split.port}/{split.scheme}"


class IpfsBlobStore:
    """Ciphertexts pinned in a Kubo node through its RPC API (``ipfshttpclient``).

    * ``put`` = ``add --cid-version=1 --raw-leaves --pin --chunker=size-262144``. Blobs up to
      256 KiB are a single raw block whose CID is :func:`cid_v1_raw` (checked: a different answer
      raises :class:`IntegrityMismatch`); larger blobs are chunked into a UnixFS DAG and the
      locator is its dag-pb root CID, exactly as IPFS returns it (validated).
    * ``get`` = ``cat``. Raw-CID blobs are re-hashed and checked; dag-pb blobs cannot be checked
      against their CID without re-building the DAG, so the gateway verifies them (and everything
      else) against the on-chain ``contentHash`` = ``sha256(ciphertext)``.
    * ``local_only=True`` (default) sends ``offline=true`` with each request: a blob the node does
      not hold is reported at once as :class:`BlobNotFound` instead of the node searching the
      public network until the timeout (and leaking which CIDs the gateway asks for).
    * ``delete`` = ``pin rm`` (not-pinned is fine). Blocks disappear at the node's next ``repo gc``;
      IPFS copies elsewhere cannot be recalled, which is why erasure relies on destroying the
      record's wrapped data key (crypto-shredding), not on deleting ciphertext.
    * ``exists`` = "is pinned (recursively)", so it turns false right after ``delete``.
    * ``check`` = ``id``; connection refused / timeout / non-IPFS answers → :class:`StorageUnavailable`.
    * ``replicate`` = ``pin add`` *with* the network (the private swarm), bounded by a timeout, then
      verified against the on-chain ``contentHash``: replicas for peer gateways and recovery from the swarm.
    """

    name = "ipfs"
    remote = True

    def __init__(self, api_url: str, *, timeout: float = 10, local_only: bool = True) -> None:
        self.api_addr = api_multiaddr(api_url)
        self.timeout = timeout
        try:
            self._client = ipfshttpclient.Client(self.api_addr, timeout=timeout, offline=local_only)
            self._network = ipfshttpclient.Client(self.api_addr, timeout=timeout, offline=False)  # replicate only
        except ipfs_exc.AddressError as exc:
            raise BlobStoreError(f"invalid IPFS API address {api_url!r}: {exc}") from None

    def __repr__(self) -> str:
        return f"IpfsBlobStore(api={self.api_addr!r})"

    # -- error mapping ---------------------------------------------------------------------------

    def _call(
        self, action: str, fn: Callable[[], _T], on_error: Callable[[str], BlobStoreError | None] | None = None
    ) -> _T:
        try:
            return fn()
        except ipfs_exc.ErrorResponse as exc:
            message = str(exc)
            if on_error is not None:
                mapped = on_error(message)
                if mapped is not None:
                    raise mapped from None
            lowered = message.lower()
            if "no space left" in lowered or "quota" in lowered:
                raise StorageFull(f"IPFS {action}: {message}") from None
            raise BlobStoreError(f"IPFS {action} failed: {message}") from None
        except (ipfs_exc.ConnectionError, ipfs_exc.TimeoutError, ipfs_exc.ProtocolError, ipfs_exc.StatusError) as exc:
            raise StorageUnavailable(
                f"IPFS daemon at {self.api_addr} unavailable during {action}: {type(exc).__name__}"
            ) from None
        except ipfs_exc.Error as exc:
            raise StorageUnavailable(f"IPFS {action} failed: {type(exc).__name__}: {exc}") from None

    # -- BlobStore -----------------------------------------------------------------------------

    def put(self, data: bytes) -> bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes")
        data = bytes(data)
        result: Any = self._call(
            "add",
            lambda: self._client.add(
                io.BytesIO(data),
                cid_version=1,
                raw_leaves=True,
                pin=True,
                chunker=f"size-{IPFS_CHUNK_SIZE}",
            ),
        )
        if isinstance(result, list):  # several progress/entry objects: the last names the file root
            result = result[-1]
        try:
            returned = str(result["Hash"])
        except (KeyError, TypeError):
            raise StorageUnavailable("IPFS add returned no CID") from None
        try:
            cid = cid_from_str(returned)
        except InvalidLocator as exc:
            raise BlobStoreError(
                f"IPFS returned a CID of an unsupported format ({exc}); check Import.* config"
            ) from None
        if len(data) <= IPFS_CHUNK_SIZE and cid != cid_v1_raw(data):
            raise IntegrityMismatch(
                f"IPFS stored a single-block blob under {returned}, expected {cid_to_str(cid_v1_raw(data))}"
            )
        return cid

    def get(self, locator: bytes) -> bytes:
        cid = validate_cid(locator)
        s = cid_to_str(cid)

        def not_found(message: str) -> BlobStoreError | None:
            lowered = message.lower()
            if "not found" in lowered or "could not find" in lowered:
                return BlobNotFound(f"no blob {s} on the IPFS node")
            return None

        reply: Any = self._call("cat", lambda: self._client.cat(s), not_found)
        data = bytes(reply)
        if cid[1] == CODEC_RAW and hashlib.sha256(data).digest() != sha256_of_cid(cid):
            raise IntegrityMismatch(f"IPFS returned bytes that do not match {s}")
        return data

    def delete(self, locator: bytes) -> None:
        s = cid_to_str(validate_cid(locator))

        def not_pinned(message: str) -> BlobStoreError | None:
            return _Ignored() if "not pinned" in message.lower() else None

        try:
            self._call("pin rm", lambda: self._client.pin.rm(s), not_pinned)
        except _Ignored:
            return

    def exists(self, locator: bytes) -> bool:
        s = cid_to_str(validate_cid(locator))

        def not_pinned(message: str) -> BlobStoreError | None:
            return _Ignored() if "not pinned" in message.lower() else None

        try:
            result: Any = self._call("pin ls", lambda: self._client.pin.ls(s, type="recursive"), not_pinned)
        except _Ignored:
            return False
        try:
            return s in result["Keys"]
        except (KeyError, TypeError):
            return False

    def locators(self) -> list[bytes]:
        """Every recursively pinned CID of the accepted format (the node is assumed to be the gateway's own)."""
        result: Any = self._call("pin ls", lambda: self._client.pin.ls(type="recursive"))
        out = []
        for s in (result.get("Keys") or {}) if isinstance(result, dict) or hasattr(result, "get") else {}:
            try:
                out.append(cid_from_str(s))
            except InvalidLocator:
                continue
        return out

    def replicate(self, locator: bytes, content_hash: bytes, *, timeout: float) -> None:
        """Pins ``locator`` fetching it through the swarm (the one request allowed to ask other nodes), then
        re-hashes what was pinned against ``content_hash`` (the chain's ``sha256(ciphertext)``).

        For a replica of another gateway's record and for recovering this gateway's own lost blobs. Kubo
        gives up after ``timeout`` seconds (:class:`BlobNotFound`: no node of the swarm has it); bytes that do
        not match are unpinned again and raise :class:`IntegrityMismatch`."""
        s = cid_to_str(validate_cid(locator))

        def not_fetched(message: str) -> BlobStoreError | None:
            lowered = message.lower()
            if "deadline" in lowered or "not found" in lowered or "context canceled" in lowered:
                return BlobNotFound(f"no node of the swarm gave {s} within {timeout:g}s")
            return None

        self._call(
            "pin add",
            lambda: self._network.pin.add(s, opts={"timeout": f"{timeout:g}s"}, timeout=timeout + 5),
            not_fetched,
        )
        try:
            data = self.get(locator)
        except IntegrityMismatch:
            self.delete(locator)
            raise
        if hashlib.sha256(data).digest() != content_hash:
            self.delete(locator)
            raise IntegrityMismatch(f"{s} fetched from the swarm does not match the on-chain contentHash")

    def check(self) -> None:
        result: Any = self._call("id", self._client.id)
        try:
            result["ID"]
        except (KeyError, TypeError):
            raise StorageUnavailable(f"{self.api_addr} did not answer like an IPFS node") from None


class _Ignored(BlobStoreError):
    """Internal: an IPFS error reply that the operation treats as success (never escapes)."""


def make_store(settings: GatewaySettings) -> BlobStore:
    """The store ``settings`` name: ``HCL_STORE=local`` (``blob_dir``) or ``ipfs`` (``ipfs_api``)."""
    if settings.store is StoreKind.IPFS:
        return IpfsBlobStore(settings.ipfs_api)
    return LocalBlobStore(settings.blob_dir, create=True)
