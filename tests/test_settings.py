"""Settings: .env.example equals the code's defaults; production refuses unsafe ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[1]


def _example() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


def test_env_example_lists_every_setting_with_the_code_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = _example()
    names = {f"STENCIL_{n.upper()}" for n in Settings.model_fields}
    assert set(example) == names, "run scripts/gen_env_example.py"
    for k in list(__import__("os").environ):
        if k.startswith("STENCIL_"):
            monkeypatch.delenv(k)
    from_file = Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert from_file.model_dump() == defaults.model_dump()


def test_every_setting_is_described() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no description"


def test_production_refuses_unsafe_defaults() -> None:
    with pytest.raises(SettingsError, match="PostgreSQL.*s3"):
        Settings(_env_file=None, env="production")  # type: ignore[call-arg]
    ok = Settings(  # type: ignore[call-arg]
        _env_file=None,
        env="production",
        database_url="postgresql://u@db/stencil",
        storage="s3",
        s3_bucket="out",
    )
    assert ok.db_url.startswith("postgresql+psycopg://")
