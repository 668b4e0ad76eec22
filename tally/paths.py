"""Where the project's files are: the checkout this package was installed from."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "supabase" / "migrations"
STAND_IN = ROOT / "supabase" / "local" / "supabase_stand_in.sql"
SEED = ROOT / "supabase" / "seed.sql"
