"""PostgREST's translation of SQLSTATEs into HTTP statuses, defined once.

From PostgREST's error reference (references/errors, "HTTP Status Codes"),
as Supabase documents it too. Used by the PostgREST stand-in and by tests
that check an error is a deliberate client error, not a 5xx.
"""

from __future__ import annotations

EXACT_STATUSES = {
    "23503": 409,
    "23505": 409,
    "25006": 405,
    "53400": 500,
    "P0001": 400,
    "42883": 404,
    "42P01": 404,
}
PREFIX_STATUSES = {
    "08": 503,
    "09": 500,
    "0L": 403,
    "0P": 403,
    "25": 500,
    "28": 403,
    "2D": 500,
    "38": 500,
    "39": 500,
    "3B": 500,
    "40": 500,
    "53": 503,
    "54": 500,  # 413 in PostgREST before v12.2 (issue 3255): "too complex" is no client error
    "55": 500,
    "57": 500,
    "58": 500,
    "F0": 500,
    "HV": 500,
    "P0": 500,
    "XX": 500,
}


def postgrest_status(sqlstate: str, role: str = "authenticated") -> int:
    """The HTTP status PostgREST answers for an error with this SQLSTATE."""
    if sqlstate == "42501":
        return 401 if role == "anon" else 403
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    if sqlstate in EXACT_STATUSES:
        return EXACT_STATUSES[sqlstate]
    return PREFIX_STATUSES.get(sqlstate[:2], 400)
