"""Generated files must match their single sources: the vocabulary and the packaged ABIs."""

from __future__ import annotations

from pathlib import Path

import orjson

from node_client._abi import CONTRACT_NAMES, load_abi
from node_client._compile import CompileResult, repo_root
from node_client.vocabulary import (
    CATEGORIES,
    EMERGENCY_SAFE,
    PURPOSES,
    ROLES,
    Category,
    Purpose,
    Role,
    categories_of,
    parse_categories,
    parse_purposes,
    parse_roles,
    render_markdown,
    render_solidity,
)


def test_vocabulary_sol_is_generated_from_python() -> None:
    path = repo_root() / "contracts" / "libraries" / "Vocabulary.sol"
    assert path.read_text() == render_solidity(), "run `hcl dev gen-vocabulary`"
    doc = repo_root() / "docs" / "vocabulary.md"
    assert doc.read_text() == render_markdown(), "run `hcl dev gen-vocabulary`"


def test_packaged_abis_match_the_sources(artifacts: CompileResult) -> None:
    for name in CONTRACT_NAMES:
        assert artifacts.contracts[name].abi == load_abi(name), f"{name}: run `hcl dev gen-abi`"


def test_vocabulary_enums_agree_with_tables() -> None:
    assert [c.value for c in Category] == [t.bit for t in CATEGORIES] == list(range(15))
    assert [p.value for p in Purpose] == [t.bit for t in PURPOSES] == list(range(7))
    assert [r.value for r in Role] == [1 << t.bit for t in ROLES]
    assert categories_of(EMERGENCY_SAFE) == [
        Category.ALLERGIES,
        Category.MEDICATIONS,
        Category.CONDITIONS,
        Category.IMMUNIZATIONS,
    ]


def test_parse_slugs() -> None:
    assert parse_categories("allergies, lab-results") == (1 << 1) | (1 << 4)
    assert parse_categories(["LAB_RESULTS"]) == 1 << 4
    assert parse_purposes("treatment,emergency") == 0b11
    assert parse_roles("hospital,emergency") == int(Role.HOSPITAL | Role.EMERGENCY)


def test_parse_rejects_unknown_and_empty() -> None:
    import pytest

    with pytest.raises(ValueError, match="unknown category 'x-rays'"):
        parse_categories("allergies,x-rays")
    with pytest.raises(ValueError, match="at least one"):
        parse_purposes(" , ")


def test_data_on_chain_doc_names_every_event_field() -> None:
    """docs/data-on-chain.md must document every event and every field the contracts emit."""
    doc = (repo_root() / "docs" / "data-on-chain.md").read_text()
    for name in CONTRACT_NAMES:
        for item in load_abi(name):
            if item["type"] != "event":
                continue
            assert f"`{item['name']}`" in doc, f"event {item['name']} is not documented"
            for inp in item["inputs"]:
                assert f"`{inp['name']}`" in doc, f"{item['name']}.{inp['name']} is not documented"


def test_abi_files_are_pretty_json() -> None:
    for name in CONTRACT_NAMES:
        raw = (Path(repo_root()) / "node_client" / "abi" / f"{name}.json").read_bytes()
        assert isinstance(orjson.loads(raw), list)
