"""Ciphertext stores (gateway.storage.blobs): CID helpers, the local directory store, a real IPFS node."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.storage.blobs import (
    CODEC_DAG_PB,
    CODEC_RAW,
    IPFS_CHUNK_SIZE,
    BlobNotFound,
    BlobStore,
    BlobStoreError,
    IntegrityMismatch,
    InvalidLocator,
    IpfsBlobStore,
    LocalBlobStore,
    StorageFull,
    StorageUnavailable,
    api_multiaddr,
    cid_from_str,
    cid_to_str,
    cid_v1_raw,
    sha256_of_cid,
    validate_cid,
)
from tests.support.ipfs_fixture import IpfsNode, node_or_skip

# ipfshttpclient 0.7.0 passes urllib3's removed `strict` argument on every request.
pytestmark = pytest.mark.filterwarnings("ignore:The 'strict' parameter is no longer needed:FutureWarning")

# Known CIDs (as printed by `ipfs add --cid-version 1 --raw-leaves`, checked against Kubo below).
EMPTY_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
HELLO_CID = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"


def _b32(raw: bytes) -> str:
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


# ----------------------------------------------------------------------------------------------
# CID helpers
# ----------------------------------------------------------------------------------------------


def test_cid_v1_raw_layout_and_known_values() -> None:
    cid = cid_v1_raw(b"hello")
    assert cid[:4] == b"\x01\x55\x12\x20"
    assert cid[4:] == hashlib.sha256(b"hello").digest()
    assert len(cid) == 36
    assert cid_to_str(cid) == HELLO_CID
    assert cid_to_str(cid_v1_raw(b"")) == EMPTY_CID
    assert sha256_of_cid(cid) == hashlib.sha256(b"hello").digest()


def test_cid_string_round_trip_including_dag_pb() -> None:
    raw = cid_v1_raw(b"x")
    assert cid_from_str(cid_to_str(raw)) == raw
    dag = bytes([1, CODEC_DAG_PB, 0x12, 0x20]) + hashlib.sha256(b"root").digest()
    s = cid_to_str(dag)
    assert s.startswith("bafybei")
    assert cid_from_str(s) == dag
    assert len(s) == 59


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1024))
def test_cid_string_round_trip_property(data: bytes) -> None:
    cid = cid_v1_raw(data)
    s = cid_to_str(cid)
    assert s.startswith("bafkrei") and len(s) == 59
    assert cid_from_str(s) == cid


_GOOD = cid_v1_raw(b"good")
_GOOD_S = cid_to_str(_GOOD)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../etc/passwd",
        "/etc/passwd",
        "..",
        _GOOD_S + "/../../x",
        "../" + _GOOD_S,
        _GOOD_S[:-1] + "/",
        "/ipfs/" + _GOOD_S,
        _GOOD_S.upper(),
        "B" + _GOOD_S[1:],
        _GOOD_S + "=",
        _GOOD_S[:-1],
        _GOOD_S + "a",
        " " + _GOOD_S,
        _GOOD_S + "\n",
        _GOOD_S[:-1] + "1",  # '1' is not in the base32 alphabet
        "z" + _GOOD_S[1:],  # base58btc multibase prefix
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",  # CIDv0
        _b32(bytes([1, 0x71, 0x12, 0x20]) + bytes(32)),  # dag-cbor codec
        _b32(bytes([1, 0x55, 0x13, 0x20]) + bytes(32)),  # sha2-512 code with 32-byte digest
        _b32(bytes([1, 0x55, 0x12, 0x14]) + bytes(32)),  # wrong digest length
        _b32(bytes([1, 0x55, 0xB2, 0x20]) + bytes(32)),  # other hash code
        _b32(bytes([2, 0x55, 0x12, 0x20]) + bytes(32)),  # CID version 2
        _b32(bytes([0x12, 0x20]) + bytes(34)),  # CIDv0 bytes, same length
    ],
)
def test_cid_from_str_rejects(bad: str) -> None:
    with pytest.raises(InvalidLocator):
        cid_from_str(bad)


def test_cid_from_str_rejects_non_canonical_trailing_bits() -> None:
    # 36 bytes = 288 bits in 58 chars (290 bits): the last char's low 2 bits must be zero.
    last = _GOOD_S[-1]
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    sibling = alphabet[alphabet.index(last) ^ 1]
    assert base64.b32decode((_GOOD_S[1:-1] + sibling).upper() + "======") == _GOOD
    with pytest.raises(InvalidLocator, match="non-canonical"):
        cid_from_str(_GOOD_S[:-1] + sibling)


@pytest.mark.parametrize("bad", [None, 42, _GOOD_S, _GOOD[:-1], _GOOD + b"\0", b"\x00" + _GOOD[1:], bytes(36)])
def test_validate_cid_rejects(bad: object) -> None:
    with pytest.raises(InvalidLocator):
        validate_cid(bad)


def test_cid_from_str_rejects_non_str() -> None:
    with pytest.raises(InvalidLocator):
        cid_from_str(_GOOD)  # type: ignore[arg-type]


def test_error_tree() -> None:
    for cls in (StorageUnavailable, StorageFull, BlobNotFound, InvalidLocator, IntegrityMismatch):
        assert issubclass(cls, BlobStoreError)


# ----------------------------------------------------------------------------------------------
# LocalBlobStore
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs", create=True)


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*")]


def test_local_put_get_exists_delete(store: LocalBlobStore) -> None:
    assert isinstance(store, BlobStore)
    store.check()
    data = os.urandom(10_000)
    cid = store.put(data)
    assert cid == cid_v1_raw(data)
    assert store.exists(cid)
    assert store.get(cid) == data
    s = cid_to_str(cid)
    path = store.root / s[-3:-1] / s
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store.delete(cid)
    assert not store.exists(cid)
    with pytest.raises(BlobNotFound):
        store.get(cid)
    store.delete(cid)  # idempotent
    assert _temp_files(store.root) == []


def test_local_empty_blob(store: LocalBlobStore) -> None:
    cid = store.put(b"")
    assert cid_to_str(cid) == EMPTY_CID
    assert store.get(cid) == b""


def test_local_identical_bytes_same_locator_no_rewrite(store: LocalBlobStore) -> None:
    data = b"same ciphertext"
    cid = store.put(data)
    s = cid_to_str(cid)
    path = store.root / s[-3:-1] / s
    before = path.stat()
    time.sleep(0.01)
    assert store.put(data) == cid
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(list(store.root.rglob("b*"))) == 1


def test_local_fan_out_uses_digest_characters(store: LocalBlobStore) -> None:
    cids = [store.put(os.urandom(16)) for _ in range(40)]
    shards = {p.name for p in store.root.iterdir() if p.is_dir()}
    assert len(shards) > 20  # first-two-chars fan-out would give exactly one: "ba"
    for cid in cids:
        s = cid_to_str(cid)
        assert (store.root / s[-3:-1] / s).is_file()


def test_local_concurrent_puts(store: LocalBlobStore) -> None:
    blobs = [os.urandom(5000) for _ in range(8)] * 4
    with ThreadPoolExecutor(max_workers=8) as pool:
        cids = list(pool.map(store.put, blobs))
    for data, cid in zip(blobs, cids, strict=True):
        assert store.get(cid) == data
    assert _temp_files(store.root) == []


def test_local_corruption_detected(store: LocalBlobStore) -> None:
    data = os.urandom(4096)
    cid = store.put(data)
    s = cid_to_str(cid)
    path = store.root / s[-3:-1] / s
    path.write_bytes(_flip(data, 2000))
    with pytest.raises(IntegrityMismatch):
        store.get(cid)


def test_local_truncated_blob_is_detected_and_healed_by_put(store: LocalBlobStore) -> None:
    data = os.urandom(4096)
    cid = store.put(data)
    s = cid_to_str(cid)
    path = store.root / s[-3:-1] / s
    path.write_bytes(data[:100])
    with pytest.raises(IntegrityMismatch):
        store.get(cid)
    assert store.put(data) == cid  # size differs → rewritten atomically
    assert store.get(cid) == data


def test_local_rejects_foreign_locators(store: LocalBlobStore) -> None:
    dag = bytes([1, CODEC_DAG_PB, 0x12, 0x20]) + bytes(32)
    for bad in (dag, cid_to_str(cid_v1_raw(b"x")), b"../../etc/passwd", b"", "../x"):
        for op in (store.get, store.exists, store.delete):
            with pytest.raises(InvalidLocator):
                op(bad)  # type: ignore[arg-type]


def test_local_missing_root_is_unavailable_not_created(tmp_path: Path) -> None:
    root = tmp_path / "not-mounted"
    store = LocalBlobStore(root)
    cid = cid_v1_raw(b"x")
    with pytest.raises(StorageUnavailable):
        store.check()
    with pytest.raises(StorageUnavailable):
        store.put(b"x")
    with pytest.raises(StorageUnavailable):
        store.get(cid)
    with pytest.raises(StorageUnavailable):
        store.exists(cid)
    with pytest.raises(StorageUnavailable):
        store.delete(cid)
    assert not root.exists()


def test_local_root_replaced_by_file_is_unavailable(tmp_path: Path) -> None:
    """Works as root too (root ignores chmod): a regular file where the directory should be."""
    root = tmp_path / "blobs"
    store = LocalBlobStore(root, create=True)
    cid = store.put(b"before")
    shutil.rmtree(root)
    root.write_bytes(b"not a directory")
    with pytest.raises(StorageUnavailable):
        store.check()
    with pytest.raises(StorageUnavailable):
        store.put(b"after")
    with pytest.raises(StorageUnavailable):
        store.get(cid)
    with pytest.raises(StorageUnavailable):
        store.exists(cid)
    with pytest.raises(StorageUnavailable):
        store.delete(cid)


@pytest.mark.skipif(os.geteuid() == 0, reason="root bypasses permission bits; covered by the file-as-root test")
def test_local_permission_denied_is_unavailable(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = LocalBlobStore(root, create=True)
    cid = store.put(b"x")
    root.chmod(0)
    try:
        with pytest.raises(StorageUnavailable):
            store.check()
        with pytest.raises(StorageUnavailable):
            store.get(cid)
        with pytest.raises(StorageUnavailable):
            store.put(b"y")
    finally:
        root.chmod(0o700)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (needs root and mount permission; skipped with the reason otherwise)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a size-limited tmpfs needs root and mount(8)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mnt)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_local_disk_full_is_storage_full_and_leaves_nothing(tiny_tmpfs: Path) -> None:
    store = LocalBlobStore(tiny_tmpfs, create=True)
    small = store.put(b"fits")
    with pytest.raises(StorageFull):
        store.put(os.urandom(200_000))
    assert _temp_files(tiny_tmpfs) == []
    assert [p.name for p in tiny_tmpfs.rglob("b*") if p.is_file()] == [cid_to_str(small)]
    assert store.get(small) == b"fits"
    store.check()  # space was given back
    assert store.get(store.put(b"still works")) == b"still works"


def test_local_file_size_limit_is_storage_full(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes write(2) fail with EFBIG: the no-root way to exercise a failing write."""
    root = tmp_path / "blobs"
    root.mkdir()
    script = textwrap.dedent(
        f"""
        import os, resource, signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from gateway.storage.blobs import LocalBlobStore, StorageFull
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
        store = LocalBlobStore({str(root)!r})
        store.put(b"small")
        try:
            store.put(os.urandom(100_000))
        except StorageFull as exc:
            print("StorageFull", exc)
        else:
            print("no error")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("StorageFull"), done.stdout + done.stderr
    assert "errno 27" in done.stdout  # EFBIG
    assert _temp_files(root) == []
    assert LocalBlobStore(root).get(cid_v1_raw(b"small")) == b"small"


def test_local_cleanup_temp_only_removes_stale(store: LocalBlobStore) -> None:
    cid = store.put(b"x")
    shard = store.root / cid_to_str(cid)[-3:-1]
    stale, fresh = shard / ".tmp-stale", shard / ".tmp-fresh"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"in progress")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert store.cleanup_temp(older_than=3600) == 1
    assert not stale.exists() and fresh.exists()
    assert store.get(cid) == b"x"


# ----------------------------------------------------------------------------------------------
# IpfsBlobStore: address handling (no daemon needed)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_addr", "expected"),
    [
        ("/ip4/127.0.0.1/tcp/5001/http", "/ip4/127.0.0.1/tcp/5001/http"),
        ("/ip4/127.0.0.1/tcp/5001", "/ip4/127.0.0.1/tcp/5001/http"),
        ("/dns/ipfs.internal/tcp/5001/https", "/dns/ipfs.internal/tcp/5001/https"),
        ("http://127.0.0.1:5001", "/ip4/127.0.0.1/tcp/5001/http"),
        ("http://127.0.0.1:5001/api/v0", "/ip4/127.0.0.1/tcp/5001/http"),
        ("https://ipfs.internal:443/", "/dns/ipfs.internal/tcp/443/https"),
        ("http://[::1]:5001", "/ip6/::1/tcp/5001/http"),
    ],
)
def test_api_multiaddr(given_addr: str, expected: str) -> None:
    assert api_multiaddr(given_addr) == expected


@pytest.mark.parametrize(
    "bad", ["", "127.0.0.1:5001", "/ip4/127.0.0.1/udp/5001", "ftp://x:1", "http://x", "http://h:1/other"]
)
def test_api_multiaddr_rejects(bad: str) -> None:
    with pytest.raises(BlobStoreError):
        api_multiaddr(bad)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ipfs_nothing_listening_is_unavailable() -> None:
    store = IpfsBlobStore(f"/ip4/127.0.0.1/tcp/{_closed_port()}/http", timeout=2)
    assert isinstance(store, BlobStore)
    cid = cid_v1_raw(b"x")
    for call in (
        store.check,
        lambda: store.put(b"x"),
        lambda: store.get(cid),
        lambda: store.delete(cid),
        lambda: store.exists(cid),
    ):
        with pytest.raises(StorageUnavailable):
            call()


def test_ipfs_non_ipfs_http_server_is_unavailable(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N ..."
        port = int(line.split(" port ")[1].split()[0])
        store = IpfsBlobStore(f"http://127.0.0.1:{port}", timeout=5)
        with pytest.raises(StorageUnavailable):
            store.check()
    finally:
        server.terminate()
        server.wait(timeout=10)


# ----------------------------------------------------------------------------------------------
# IpfsBlobStore against a real Kubo node
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def kubo(ipfs_node: IpfsNode) -> IpfsNode:  # the session fixture of tests/support/ipfs_fixture.py
    return ipfs_node


@pytest.fixture
def ipfs(kubo: IpfsNode) -> IpfsBlobStore:
    return IpfsBlobStore(kubo.api_multiaddr, timeout=30)


def _cli_cid(node: IpfsNode, tmp_path: Path, data: bytes, *extra: str) -> str:
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    return node.ipfs("add", "--cid-version=1", "--raw-leaves", "--only-hash", "-Q", *extra, str(path)).strip()


def test_ipfs_node_is_kubo_and_loopback_only(kubo: IpfsNode) -> None:
    assert kubo.version.startswith("kubo/")
    assert kubo.api_multiaddr.startswith("/ip4/127.0.0.1/")
    # every TCP socket the daemon holds is bound to / connected from loopback
    inodes = set()
    for fd in Path(f"/proc/{kubo.process.pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    seen = 0
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            if cols[9] in inodes:
                seen += 1
                local_ip = cols[1].split(":")[0]
                assert len(local_ip) == width
                if width == 8:
                    assert local_ip.endswith("7F"), row  # 127.x.x.x (little-endian hex)
                else:
                    assert local_ip in ("00000000000000000000000001000000",) or local_ip.endswith("7F"), row
    assert seen >= 2  # API + gateway listeners


@pytest.mark.parametrize("size", [0, 5, 10_000, IPFS_CHUNK_SIZE], ids=["empty", "5B", "10KB", "256KiB"])
def test_ipfs_single_block_cid_equals_cid_v1_raw(
    ipfs: IpfsBlobStore, kubo: IpfsNode, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    cid = ipfs.put(data)
    assert cid == cid_v1_raw(data)
    assert cid_to_str(cid) == _cli_cid(kubo, tmp_path, data)
    assert ipfs.get(cid) == data


def test_ipfs_known_cids(ipfs: IpfsBlobStore) -> None:
    assert cid_to_str(ipfs.put(b"")) == EMPTY_CID
    assert cid_to_str(ipfs.put(b"hello")) == HELLO_CID


def test_ipfs_put_get_exists_delete(ipfs: IpfsBlobStore) -> None:
    ipfs.check()
    data = os.urandom(10_000)
    cid = ipfs.put(data)
    assert ipfs.exists(cid)
    assert ipfs.get(cid) == data
    assert ipfs.put(data) == cid  # idempotent
    ipfs.delete(cid)
    assert not ipfs.exists(cid)
    ipfs.delete(cid)  # idempotent: "not pinned" is fine


def test_ipfs_3mb_blob_is_a_dag_and_round_trips(ipfs: IpfsBlobStore, kubo: IpfsNode, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    cid = ipfs.put(data)
    assert cid[1] == CODEC_DAG_PB  # multi-block: the locator is the UnixFS root, not cid_v1_raw
    assert cid_to_str(cid) == _cli_cid(kubo, tmp_path, data, f"--chunker=size-{IPFS_CHUNK_SIZE}")
    assert ipfs.exists(cid)
    got = ipfs.get(cid)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()  # what the gateway checks
    ipfs.delete(cid)
    assert not ipfs.exists(cid)


def test_ipfs_just_over_one_chunk_is_dag_pb(ipfs: IpfsBlobStore) -> None:
    data = os.urandom(IPFS_CHUNK_SIZE + 1)
    cid = ipfs.put(data)
    assert cid[1] == CODEC_DAG_PB
    assert ipfs.get(cid) == data


def test_ipfs_unknown_cid_is_not_found_quickly(ipfs: IpfsBlobStore) -> None:
    cid = cid_v1_raw(b"never stored " + os.urandom(8))
    started = time.monotonic()
    with pytest.raises(BlobNotFound):
        ipfs.get(cid)
    assert time.monotonic() - started < 5
    assert not ipfs.exists(cid)
    ipfs.delete(cid)


def test_ipfs_rejects_invalid_locators(ipfs: IpfsBlobStore) -> None:
    for bad in (b"../x", cid_to_str(cid_v1_raw(b"x")), bytes(36)):
        for op in (ipfs.get, ipfs.exists, ipfs.delete):
            with pytest.raises(InvalidLocator):
                op(bad)  # type: ignore[arg-type]


def test_ipfs_raw_codec_bytes_are_verified(ipfs: IpfsBlobStore) -> None:
    """A raw CID is re-hashed after cat; a dag-pb one is left to the on-chain contentHash."""
    data = b"verified"
    cid = ipfs.put(data)
    assert cid[1] == CODEC_RAW
    assert ipfs.get(cid) == data


def test_ipfs_daemon_stopped_is_unavailable(tmp_path: Path) -> None:
    node = node_or_skip(tmp_path)
    try:
        store = IpfsBlobStore(node.api_multiaddr, timeout=5)
        cid = store.put(b"before the outage")
        store.check()
    finally:
        node.stop()
    assert not node.running
    for call in (
        store.check,
        lambda: store.put(b"x"),
        lambda: store.get(cid),
        lambda: store.delete(cid),
        lambda: store.exists(cid),
    ):
        with pytest.raises(StorageUnavailable):
            call()
