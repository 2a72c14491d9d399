"""The committed generated protobuf code is exactly what `python -m server.protogen` makes."""

from __future__ import annotations

from pathlib import Path

from server.protogen import generate

_COMMITTED = Path(__file__).resolve().parents[2] / "server" / "_pb"


def test_generated_code_matches_the_protos_byte_for_byte(tmp_path: Path) -> None:
    fresh = tmp_path / "_pb"
    generate(fresh)
    made = {p.relative_to(fresh): p.read_bytes() for p in fresh.rglob("*") if p.is_file()}
    committed = {
        p.relative_to(_COMMITTED): p.read_bytes()
        for p in _COMMITTED.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert sorted(made) == sorted(committed)
    stale = [str(name) for name, data in made.items() if committed[name] != data]
    assert stale == [], "run: python -m server.protogen"
