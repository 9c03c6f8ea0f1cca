"""The offline Solidity toolchain: solc-js wrapper, Python compiler, Hardhat parity, Hardhat node.

The parity test is the one that matters: contracts deployed from Python artifacts must be the
same bytes that Hardhat (and anyone verifying with Hardhat) produces from the same sources.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import solcx

from node_client._compile import (
    CompilationError,
    CompileResult,
    ToolchainError,
    compile_contracts,
    find_solc,
    load_solc_config,
    repo_root,
)
from node_client._node import HardhatNode, NodeError, free_port

ROOT = repo_root()
WRAPPER = ROOT / "scripts" / "solc-js"
HARDHAT = ROOT / "node_modules" / ".bin" / "hardhat"
# The regex py-solc-x 2.0.5 applies to `solc --version` (solcx.wrapper).
SOLCX_VERSION_RE = re.compile(r"(\d+\.\d+\.\d+)(?:-nightly.\d+.\d+.\d+|)(\+commit.\w+)")
#: Opcodes newer than London (Shanghai: PUSH0; Cancun: MCOPY, TLOAD, TSTORE, BLOBHASH, BLOBBASEFEE). The
#: consortium chain (geth Clique) stops at London and treats each of them as an invalid instruction.
POST_LONDON_OPCODES = {
    0x5F: "PUSH0",
    0x5E: "MCOPY",
    0x5C: "TLOAD",
    0x5D: "TSTORE",
    0x49: "BLOBHASH",
    0x4A: "BLOBBASEFEE",
}


def _pinned_version() -> str:
    return str(json.loads((ROOT / "solc-settings.json").read_text())["version"])


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[CompileResult, Path, float]:
    """One cold compile of the real contracts/ into a private build dir, shared by the tests."""
    build_dir = tmp_path_factory.mktemp("solc-build")
    started = time.monotonic()
    result = compile_contracts(build_dir=build_dir)
    return result, build_dir, time.monotonic() - started


def test_wrapper_version_matches_solcx_regex() -> None:
    out = subprocess.run([str(WRAPPER), "--version"], capture_output=True, text=True, check=True, timeout=60).stdout
    lines = out.splitlines()
    assert lines[0] == "solc, the solidity compiler commandline interface"
    assert lines[1].startswith("Version: ")
    match = SOLCX_VERSION_RE.search(out)
    assert match is not None
    assert match.group(1) == _pinned_version()
    assert str(solcx.wrapper.get_solc_version(WRAPPER)) == _pinned_version()


def test_wrapper_rejects_unknown_usage() -> None:
    for args in ([], ["--bogus"], ["--version", "--standard-json"]):
        proc = subprocess.run([str(WRAPPER), *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0, args
        assert proc.stdout == ""
        assert proc.stderr.strip()


def test_wrapper_import_callback_resolves_base_path_and_node_modules(tmp_path: Path) -> None:
    """Sources not given in the input are read by the wrapper: base path, then node_modules."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "Twice.sol").write_text(
        "// SPDX-License-Identifier: Apache-2.0\npragma solidity ^0.8.24;\n"
        "library Twice { function times2(uint256 x) internal pure returns (uint256) { return x * 2; } }\n"
    )
    main = (
        "// SPDX-License-Identifier: Apache-2.0\npragma solidity ^0.8.24;\n"
        'import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";\n'
        'import {Twice} from "lib/Twice.sol";\n'
        "contract UsesBoth { function f(uint256 a) external pure returns (uint256) "
        "{ return Twice.times2(Math.max(a, 1)); } }\n"
    )
    out = solcx.compile_standard(
        {
            "language": "Solidity",
            "sources": {"Main.sol": {"content": main}},
            "settings": {"outputSelection": {"*": {"*": ["evm.bytecode.object"]}}},
        },
        solc_binary=WRAPPER,
        base_path=tmp_path,
    )
    assert out["contracts"]["Main.sol"]["UsesBoth"]["evm"]["bytecode"]["object"]
    assert "@openzeppelin/contracts/utils/math/Math.sol" in out["sources"]
    assert "lib/Twice.sol" in out["sources"]


def test_find_solc_resolution_order(tmp_path: Path) -> None:
    native = tmp_path / "native-solc"
    native.write_text("")
    solcx_dir = tmp_path / "solcx"
    solcx_dir.mkdir()
    empty_env = {"SOLCX_BINARY_PATH": str(solcx_dir)}

    # 3. nothing else: the repository's solc-js wrapper, as an absolute path
    assert find_solc(empty_env) == WRAPPER.absolute()
    # 2. a py-solc-x install of the pinned version (only that version)
    (solcx_dir / "solc-v0.4.26").write_text("")
    assert find_solc(empty_env) == WRAPPER.absolute()
    pinned = solcx_dir / f"solc-v{_pinned_version()}"
    pinned.write_text("")
    assert find_solc(empty_env) == pinned
    # 1. HCL_SOLC beats everything, and must be absolute and exist
    assert find_solc({**empty_env, "HCL_SOLC": str(native)}) == native
    with pytest.raises(ToolchainError):
        find_solc({"HCL_SOLC": "relative/solc"})
    with pytest.raises(ToolchainError):
        find_solc({"HCL_SOLC": str(tmp_path / "absent")})


def test_compile_then_cache_hit(compiled: tuple[CompileResult, Path, float], tmp_path: Path) -> None:
    result, build_dir, cold_seconds = compiled
    assert result.solc_version.startswith(_pinned_version() + "+commit.")
    assert not result.cache_hit
    assert result.contracts, "contracts/ defines no contract"
    for name, art in result.contracts.items():
        assert art.name == name
        assert art.source_name.startswith("contracts/")
        assert art.bytecode.startswith("0x") and art.deployed_bytecode.startswith("0x")
    assert list(build_dir.glob("*.json"))

    # A cache hit must not start solc at all: a path that does not exist proves it.
    started = time.monotonic()
    again = compile_contracts(solc=tmp_path / "no-such-solc", build_dir=build_dir)
    cached_seconds = time.monotonic() - started
    assert again.cache_hit
    assert again.contracts == result.contracts
    assert again.solc_version == result.solc_version
    print(f"compile: cold {cold_seconds:.2f}s, cached {cached_seconds:.3f}s")


def _strip_metadata(code: bytes) -> bytes:
    """``code`` without solc's trailing CBOR metadata, whose length is given by the last two bytes."""
    length = int.from_bytes(code[-2:], "big")
    assert 0 < length <= len(code) - 2, f"no CBOR metadata length at the end ({code[-2:].hex()})"
    cbor = code[-2 - length : -2]
    assert cbor[0] & 0xE0 == 0xA0 and b"solc" in cbor, f"not solc metadata: {cbor.hex()}"
    return code[: -2 - length]


def _forbidden_opcodes(code: bytes) -> list[tuple[int, str]]:
    """Linear sweep: (offset, name) of every post-London opcode, PUSH1..PUSH32 immediates skipped."""
    hits: list[tuple[int, str]] = []
    pc = 0
    while pc < len(code):
        op = code[pc]
        if op in POST_LONDON_OPCODES:
            hits.append((pc, POST_LONDON_OPCODES[op]))
        pc += 1 + (op - 0x5F if 0x60 <= op <= 0x7F else 0)
    # A PUSH running past the end means the sweep lost the instruction boundaries (data taken for code).
    assert pc == len(code), f"PUSH immediate runs {pc - len(code)} byte(s) past the end"
    return hits


def test_disassembler_finds_post_london_opcodes_and_skips_push_data() -> None:
    assert _forbidden_opcodes(bytes.fromhex("5f00")) == [(0, "PUSH0")]
    assert _forbidden_opcodes(bytes.fromhex("60015e5c5d494a")) == [
        (2, "MCOPY"),
        (3, "TLOAD"),
        (4, "TSTORE"),
        (5, "BLOBHASH"),
        (6, "BLOBBASEFEE"),
    ]
    assert _forbidden_opcodes(bytes.fromhex("605f00")) == []  # PUSH1 0x5f: data, not an opcode
    assert _forbidden_opcodes(bytes.fromhex("7f" + "5f" * 32 + "5f")) == [(33, "PUSH0")]  # after a PUSH32
    with pytest.raises(AssertionError):
        _forbidden_opcodes(bytes.fromhex("615f"))  # PUSH2 with one byte left
    metadata = bytes.fromhex("a26469706673425f5f64736f6c634300081c")  # {"ipfs": 5f5f, "solc": 0.8.28}
    code = bytes.fromhex("5f00") + metadata + len(metadata).to_bytes(2, "big")
    assert _forbidden_opcodes(_strip_metadata(code)) == [(0, "PUSH0")]


def test_contracts_target_london_without_post_london_opcodes(compiled: tuple[CompileResult, Path, float]) -> None:
    """solc-settings.json pins evmVersion london, and no init or runtime code uses a newer opcode."""
    _, settings = load_solc_config()
    assert settings.get("evmVersion") == "london"

    result, _, _ = compiled
    deployable = {n: a for n, a in result.contracts.items() if a.is_deployable}
    assert {"ConsentRegistry", "MemberRegistry", "RecordRegistry", "AccessLedger"} <= set(deployable)
    found: dict[str, list[tuple[int, str]]] = {}
    for name, art in sorted(deployable.items()):
        creation = bytes.fromhex(art.bytecode.removeprefix("0x"))
        runtime = bytes.fromhex(art.deployed_bytecode.removeprefix("0x"))
        # The creation code is the init code followed by the runtime code (with its metadata).
        assert creation.endswith(runtime) and len(creation) > len(runtime), name
        init = creation[: len(creation) - len(runtime)]
        for part, code in (("init", init), ("runtime", _strip_metadata(runtime))):
            hits = _forbidden_opcodes(code)
            if hits:
                found[f"{name} {part}"] = hits
    assert not found, f"post-London opcodes: {found}"


@pytest.mark.slow
def test_hardhat_and_python_bytecode_identical(compiled: tuple[CompileResult, Path, float], tmp_path: Path) -> None:
    result, _, _ = compiled
    artifacts = tmp_path / "artifacts"
    env = {
        **os.environ,
        "HCL_HARDHAT_ARTIFACTS": str(artifacts),
        "HCL_HARDHAT_CACHE": str(tmp_path / "cache"),
        "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true",
    }
    proc = subprocess.run(
        [str(HARDHAT), "compile", "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    deployable = {n: a for n, a in result.contracts.items() if a.is_deployable}
    assert deployable, "contracts/ defines nothing with bytecode"
    for name, art in result.contracts.items():
        hh_file = artifacts / art.source_name / f"{name}.json"
        assert hh_file.is_file(), f"Hardhat produced no artifact for {art.source_name}:{name}"
        hh = json.loads(hh_file.read_text())
        assert hh["abi"] == art.abi, name
        assert hh["bytecode"] == art.bytecode, f"{name}: creation bytecode differs"
        assert hh["deployedBytecode"] == art.deployed_bytecode, f"{name}: runtime bytecode differs"

    # Hardhat saw the same set of contracts under contracts/ as the Python compiler did.
    hh_names = {p.stem for p in (artifacts / "contracts").rglob("*.json") if not p.name.endswith(".dbg.json")}
    assert hh_names == set(result.contracts)


@pytest.mark.slow
def test_hardhat_node_starts_answers_and_stops(tmp_path: Path) -> None:
    port = free_port()
    node = HardhatNode(log_path=tmp_path / "node.log")
    with node.start(port=port, timeout=90) as running:
        assert running.url == f"http://127.0.0.1:{port}"
        reply = _rpc(running.url, "eth_chainId")
        assert int(reply, 16) == 31337
        pid = running.pid
        assert pid is not None
        # A second node on the same port is refused before anything is launched.
        with pytest.raises(NodeError, match="already in use"):
            HardhatNode(log_path=tmp_path / "other.log").start(port=port, timeout=5)
    assert not node.running
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole process group is gone
    assert (tmp_path / "node.log").read_text()


def _rpc(url: str, method: str) -> str:
    import urllib.request

    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["result"])


def _scratch_root(tmp_path: Path, sources: dict[str, str]) -> Path:
    """A throwaway checkout layout: config files copied, node_modules shared."""
    root = tmp_path / "scratch"
    (root / "contracts").mkdir(parents=True)
    for name in ("hardhat.config.js", "solc-settings.json"):
        (root / name).write_bytes((ROOT / name).read_bytes())
    (root / "node_modules").symlink_to(ROOT / "node_modules")
    for rel, text in sources.items():
        path = root / "contracts" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_compile_errors_raise_compilation_error(tmp_path: Path) -> None:
    root = _scratch_root(
        tmp_path,
        {
            "Broken.sol": "// SPDX-License-Identifier: Apache-2.0\npragma solidity ^0.8.24;\n"
            "contract Broken { function f() external { undefinedThing(); } }\n"
        },
    )
    with pytest.raises(CompilationError) as info:
        compile_contracts(root=root, solc=WRAPPER)
    assert any("undefinedThing" in e for e in info.value.errors)
    assert not list((root / "build" / "solc").glob("*.json")), "failures must not be cached"


def test_unresolvable_import_raises_before_solc(tmp_path: Path) -> None:
    root = _scratch_root(
        tmp_path,
        {"A.sol": 'pragma solidity ^0.8.24;\nimport "./missing/B.sol";\ncontract A {}\n'},
    )
    with pytest.raises(CompilationError, match=r"missing/B\.sol"):
        compile_contracts(root=root, solc=tmp_path / "no-such-solc")
