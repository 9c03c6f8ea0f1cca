"""Compile the project's Solidity contracts from Python, byte-for-byte as Hardhat does.

Two toolchains compile ``contracts/``: Hardhat (for ``hardhat compile`` / ``hardhat node`` users)
and this module (for the Python client, tests and deployment scripts, through py-solc-x). A contract
deployed by one must be verifiable against the other, so both must produce the same bytecode. The
bytecode embeds a hash of the contract's metadata, and the metadata records the compiler version,
the settings and every source unit's *name* and content hash. Hence this module:

* reads the version and settings from ``solc-settings.json``, the file ``hardhat.config.js`` reads;
* names sources exactly as Hardhat does: ``contracts/<relative path>`` for the project's files and
  the import path itself (``@openzeppelin/contracts/...``) for library files, with relative imports
  resolved against the importing unit's name, as solc does;
* uses no remappings (they would enter the metadata, and Hardhat 2 uses none);
* passes every source, including the resolved OpenZeppelin files, as literal ``content`` in the
  standard-JSON input, so the compiler never reads the filesystem. This works the same with a native
  ``solc`` (whose ``--include-path`` py-solc-x's ``compile_standard`` cannot pass) and with the
  ``scripts/solc-js`` wrapper, and it gives the cache key the exact bytes that get compiled.

No native solc can be downloaded on the project's machines, so :func:`find_solc` falls back to
``scripts/solc-js``, a Node wrapper around the npm ``solc`` package that py-solc-x can drive.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
import solcx
from packaging.version import Version
from solcx.exceptions import SolcError, SolcNotInstalled
from solcx.install import get_executable, get_installed_solc_versions
from solcx.wrapper import get_solc_version

from node_client._exceptions import CompilationError, NodeClientError

__all__ = [
    "CompilationError",
    "CompileResult",
    "ContractArtifact",
    "SolcCompilationError",
    "ToolchainError",
    "compile_contracts",
    "find_solc",
    "load_solc_config",
    "repo_root",
]

#: File, at the repository top, holding ``{"version": ..., "settings": {...}}`` for solc.
SOLC_SETTINGS_FILE: Final = "solc-settings.json"
#: Directory, relative to the root, whose ``**/*.sol`` files are the project's sources.
SOURCES_DIR: Final = "contracts"
#: Bumped whenever the cache file layout or what goes into the key changes.
_CACHE_FORMAT: Final = 1
#: Outputs requested from solc. None of them enters the metadata, so they cannot change bytecode.
_OUTPUT_SELECTION: Final[dict[str, Any]] = {
    "*": {
        "*": [
            "abi",
            "evm.bytecode.object",
            "evm.deployedBytecode.object",
            "evm.methodIdentifiers",
            "metadata",
        ]
    }
}


class ToolchainError(NodeClientError):
    """The compiler toolchain itself is missing, misconfigured or misbehaving.

    Kept apart from :class:`CompilationError` so that callers can tell "your contract is wrong"
    from "your machine is not set up".
    """


class SolcCompilationError(CompilationError):
    """A :class:`CompilationError` that keeps solc's messages apart in ``errors``.

    Callers catch :class:`CompilationError`; tools that show diagnostics one by one (an editor
    integration, a test asserting on one message) read ``errors``.
    """

    def __init__(self, errors: list[str] | tuple[str, ...], summary: str | None = None) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        head = summary or f"solc reported {len(self.errors)} error(s)"
        super().__init__(head + ("\n" + "\n".join(self.errors) if self.errors else ""))


@dataclass(frozen=True)
class ContractArtifact:
    """What the client needs of one compiled contract (interfaces have ``0x`` bytecode)."""

    name: str
    source_name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    method_identifiers: dict[str, str] = field(default_factory=dict)

    @property
    def is_deployable(self) -> bool:
        """True for contracts and libraries; false for interfaces and abstract contracts."""
        return self.bytecode not in ("", "0x")


@dataclass(frozen=True)
class CompileResult:
    """Artifacts of every contract defined under ``contracts/``, keyed by contract name."""

    solc_version: str
    contracts: dict[str, ContractArtifact]
    warnings: tuple[str, ...] = ()
    cache_hit: bool = False


@dataclass(frozen=True)
class _SolcConfig:
    version: str
    settings: dict[str, Any]


def repo_root(root: Path | str | None = None) -> Path:
    """Return the repository root: the directory holding ``hardhat.config.js``.

    Derived from this file's location (``node_client/..``) because the Solidity sources, the
    ``node_modules`` with OpenZeppelin and the solc-js wrapper all live in the checkout, not in an
    installed package. ``root`` overrides it (tests use throwaway copies of the layout).
    """
    candidate = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    candidate = candidate.resolve()
    if not (candidate / "hardhat.config.js").is_file():
        raise ToolchainError(
            f"{candidate} is not a HealthCode Ledger checkout (no hardhat.config.js); "
            "contracts can only be compiled from a source checkout"
        )
    return candidate


def load_solc_config(root: Path | None = None) -> tuple[str, dict[str, Any]]:
    """Return ``(version, settings)`` from ``solc-settings.json``, shared with hardhat.config.js."""
    cfg = _load_config(repo_root(root))
    return cfg.version, cfg.settings


def _load_config(root: Path) -> _SolcConfig:
    path = root / SOLC_SETTINGS_FILE
    try:
        raw = orjson.loads(path.read_bytes())
        version = raw["version"]
        settings = raw["settings"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ToolchainError(f"cannot read solc version/settings from {path}: {exc}") from exc
    if not isinstance(version, str) or not isinstance(settings, dict):
        raise ToolchainError(f"{path}: expected {{'version': str, 'settings': object}}")
    if "remappings" in settings:
        # Hardhat 2 does not apply remappings, and they enter the metadata: the two toolchains
        # would silently disagree on every contract's bytecode.
        raise ToolchainError(f"{path}: remappings are not supported (Hardhat 2 ignores them)")
    return _SolcConfig(version=version, settings=settings)


def find_solc(env: Mapping[str, str] | None = None, *, root: Path | None = None) -> Path:
    """Return the absolute path of the solc executable to hand to py-solc-x.

    Order: ``HCL_SOLC`` (a native solc, e.g. on a developer machine that has one); a solc of the
    pinned version installed by py-solc-x; else the repository's ``scripts/solc-js`` wrapper, which
    always works offline. ``env`` defaults to ``os.environ``; it is a parameter so that nothing
    deeper in the library reads the environment behind the caller's back. The path is absolute
    because py-solc-x looks relative names up on ``PATH``.
    """
    environ = os.environ if env is None else env
    override = environ.get("HCL_SOLC")
    if override:
        path = Path(override)
        if not path.is_absolute():
            raise ToolchainError(f"HCL_SOLC must be an absolute path, got {override!r}")
        if not path.is_file():
            raise ToolchainError(f"HCL_SOLC={override} does not exist")
        return path

    base = repo_root(root)
    pinned = Version(_load_config(base).version)
    # py-solc-x's own folder lookup reads os.environ and creates ~/.solcx as a side effect; look
    # at the folder ourselves (same rule: SOLCX_BINARY_PATH, else ~/.solcx) and only if it exists.
    solcx_dir = Path(environ.get("SOLCX_BINARY_PATH") or Path.home() / ".solcx")
    if solcx_dir.is_dir():
        try:
            installed = get_installed_solc_versions(solcx_binary_path=solcx_dir)
            if pinned in installed:
                return Path(get_executable(pinned, solcx_binary_path=solcx_dir)).absolute()
        except (OSError, ValueError, SolcNotInstalled):
            pass  # a broken solcx folder must not stop the offline fallback

    wrapper = base / "scripts" / "solc-js"
    if not wrapper.is_file():
        raise ToolchainError(f"no solc found: set HCL_SOLC, or restore {wrapper}")
    return wrapper.absolute()


@functools.lru_cache(maxsize=8)
def _solc_version_cached(path: str, mtime_ns: int, size: int) -> str:
    try:
        return str(get_solc_version(path, with_commit_hash=True))
    except Exception as exc:
        raise ToolchainError(f"{path} --version failed: {exc}") from exc


def _solc_version(path: Path) -> str:
    """``X.Y.Z+commit.H`` of ``path``, memoised: each solc-js start costs ~0.7 s."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ToolchainError(f"solc executable {path} not found") from exc
    return _solc_version_cached(str(path), st.st_mtime_ns, st.st_size)


# --- sources and imports -------------------------------------------------------------------------

# Comments and string literals are matched whole so that an ``import`` inside them is skipped.
_TOKEN_RE: Final = re.compile(
    r"""//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|\bimport\b""",
    re.DOTALL,
)


def _import_paths(source: str) -> list[str]:
    """Import paths of a Solidity source: the first string literal after each ``import``."""
    paths: list[str] = []
    want_path = False
    for match in _TOKEN_RE.finditer(source):
        token = match.group(0)
        if token == "import":
            want_path = True
        elif want_path and token[0] in "\"'":
            paths.append(token[1:-1])
            want_path = False
    return paths


def _unit_name(importer: str, import_path: str) -> str:
    """Source unit name solc gives ``import_path`` when imported from unit ``importer``.

    Relative paths (``./``, ``../``) are resolved against the importer's *name*, not its file;
    anything else is a direct import and is its own unit name (solc's documented algorithm).
    """
    if not (import_path.startswith("./") or import_path.startswith("../")):
        return import_path
    parts = importer.split("/")[:-1]
    for segment in import_path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
        else:
            parts.append(segment)
    return "/".join(parts)


def _locate(root: Path, unit_name: str) -> Path | None:
    """File behind a unit name, the way Hardhat decides: project file first, then node_modules."""
    for candidate in (root / unit_name, root / "node_modules" / unit_name):
        if candidate.is_file():
            return candidate
    return None


def _read(path: Path) -> str:
    # Bytes, not read_text(): universal-newline translation would change the content hash
    # recorded in the metadata, and with it the bytecode.
    return path.read_bytes().decode("utf-8")


def _collect_sources(root: Path) -> dict[str, str]:
    """Every ``contracts/**/*.sol`` plus, transitively, every file they import."""
    src_dir = root / SOURCES_DIR
    pending: list[tuple[str, Path]] = [
        (f"{SOURCES_DIR}/{p.relative_to(src_dir).as_posix()}", p) for p in sorted(src_dir.rglob("*.sol")) if p.is_file()
    ]
    sources: dict[str, str] = {}
    missing: list[str] = []
    while pending:
        name, path = pending.pop()
        if name in sources:
            continue
        text = _read(path)
        sources[name] = text
        for imp in _import_paths(text):
            dep = _unit_name(name, imp)
            if dep in sources:
                continue
            dep_path = _locate(root, dep)
            if dep_path is None:
                missing.append(f'{name}: cannot resolve import "{imp}" (as {dep})')
            else:
                pending.append((dep, dep_path))
    if missing:
        raise SolcCompilationError(missing, summary="unresolved imports")
    if not sources:
        raise ToolchainError(f"no .sol files under {src_dir}")
    return dict(sorted(sources.items()))


# --- compile -------------------------------------------------------------------------------------


def _artifact_to_json(a: ContractArtifact) -> dict[str, Any]:
    return {
        "name": a.name,
        "source_name": a.source_name,
        "abi": a.abi,
        "bytecode": a.bytecode,
        "deployed_bytecode": a.deployed_bytecode,
        "method_identifiers": a.method_identifiers,
    }


def _load_cache(path: Path) -> CompileResult | None:
    try:
        raw = orjson.loads(path.read_bytes())
        if raw.get("format") != _CACHE_FORMAT:
            return None
        contracts = {name: ContractArtifact(**art) for name, art in raw["contracts"].items()}
        return CompileResult(
            solc_version=raw["solc_version"],
            contracts=contracts,
            warnings=tuple(raw.get("warnings", ())),
            cache_hit=True,
        )
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None  # absent or unreadable: recompile and overwrite


def _store_cache(path: Path, result: CompileResult) -> None:
    payload = {
        "format": _CACHE_FORMAT,
        "solc_version": result.solc_version,
        "warnings": list(result.warnings),
        "contracts": {n: _artifact_to_json(a) for n, a in result.contracts.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one


def _hex(obj: str) -> str:
    return obj if obj.startswith("0x") else "0x" + obj


def compile_contracts(
    *,
    root: Path | None = None,
    solc: Path | None = None,
    build_dir: Path | None = None,
) -> CompileResult:
    """Compile every contract under ``<root>/contracts`` and return their artifacts.

    The result is cached in ``build_dir`` (default ``<root>/build/solc``) under a hash of the
    complete standard-JSON input (every source's content, OpenZeppelin's included, and the
    settings) and the pinned compiler version; a hit returns without starting solc at all, which
    matters because a cold solc-js compile takes seconds.

    Raises :class:`SolcCompilationError` (a :class:`CompilationError`) if solc reports errors or
    an import cannot be resolved; :class:`ToolchainError` if solc is missing, is not the pinned
    version, or fails to run.
    """
    base = repo_root(root)
    cfg = _load_config(base)
    sources = _collect_sources(base)
    std_input: dict[str, Any] = {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sources.items()},
        "settings": {**cfg.settings, "outputSelection": _OUTPUT_SELECTION},
    }

    key_material = orjson.dumps(
        {"format": _CACHE_FORMAT, "solc": cfg.version, "input": std_input},
        option=orjson.OPT_SORT_KEYS,
    )
    key = hashlib.sha256(key_material).hexdigest()
    cache_file = (build_dir if build_dir is not None else base / "build" / "solc") / f"{key}.json"
    cached = _load_cache(cache_file)
    if cached is not None:
        return cached

    solc_path = Path(solc) if solc is not None else find_solc(root=base)
    if not solc_path.is_absolute():
        raise ToolchainError(f"solc path must be absolute (py-solc-x searches PATH): {solc_path}")
    solc_version = _solc_version(solc_path)
    if solc_version.split("+", 1)[0] != cfg.version:
        raise ToolchainError(f"{solc_path} is solc {solc_version}, but {SOLC_SETTINGS_FILE} pins {cfg.version}")

    try:
        output = solcx.compile_standard(
            std_input,
            solc_binary=solc_path,
            base_path=base,
            allow_paths=[base, base / "node_modules"],
        )
    except SolcError as exc:
        if exc.error_dict:
            messages = [
                e.get("formattedMessage", e.get("message", "")) for e in exc.error_dict if e.get("severity") == "error"
            ]
            raise SolcCompilationError(messages) from exc
        raise ToolchainError(f"solc failed to run: {exc}") from exc
    except ValueError as exc:  # json.loads of a garbled stdout
        raise ToolchainError(f"{solc_path} printed something other than JSON: {exc}") from exc

    warnings = tuple(
        e.get("formattedMessage", e.get("message", ""))
        for e in output.get("errors", [])
        if e.get("severity") != "error"
    )
    contracts: dict[str, ContractArtifact] = {}
    for source_name, by_name in sorted(output.get("contracts", {}).items()):
        if not source_name.startswith(f"{SOURCES_DIR}/"):
            continue  # OpenZeppelin and other libraries: compiled, but not ours to expose
        for name, out in sorted(by_name.items()):
            if name in contracts:
                raise SolcCompilationError(
                    [f"{contracts[name].source_name} and {source_name} both define {name}"],
                    summary="contract names must be unique under contracts/",
                )
            evm = out.get("evm", {})
            contracts[name] = ContractArtifact(
                name=name,
                source_name=source_name,
                abi=out.get("abi", []),
                bytecode=_hex(evm.get("bytecode", {}).get("object", "")),
                deployed_bytecode=_hex(evm.get("deployedBytecode", {}).get("object", "")),
                method_identifiers=dict(evm.get("methodIdentifiers", {})),
            )

    result = CompileResult(solc_version=solc_version, contracts=contracts, warnings=warnings)
    _store_cache(cache_file, result)
    return result
