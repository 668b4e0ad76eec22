-- The private schema that holds tally's tables and helpers. PostgREST only
-- exposes `public`, so nothing here is reachable over the REST API; `public`
-- holds only what clients may read or call.
--
-- Supabase grants every privilege on new objects in `public` to anon and
-- authenticated by default, and Postgres grants EXECUTE on every new
-- function to PUBLIC. We revoke those defaults here, once, so that a
-- function added later (by us or by the app) is callable by nobody until
-- it is granted; every migration still revokes and grants each object
-- explicitly, right under its definition.
--
-- Every function a client role or a trigger can enter, and every function
-- that acts for someone else (security definer), pins `search_path = ''`.
-- The helpers in `tally` that no client role may execute do not: they run
-- only inside those entry points, where the empty path is already in force,
-- and a SET clause costs every call a change of configuration (several per
-- cent of the database's work per event, measured) and stops the planner
-- from inlining small SQL helpers. All of them name every object
-- schema-qualified, so a caller's search_path could not change what they
-- mean anyway.

create schema if not exists tally;

revoke all on schema tally from public;
-- authenticated needs usage only to read its own rows through the
-- security_invoker views in public (row-level security still applies).
grant usage on schema tally to authenticated, service_role;

alter default privileges in schema public revoke all on tables from anon, authenticated;
alter default privileges in schema public revoke all on functions from anon, authenticated;
alter default privileges in schema public revoke all on sequences from anon, authenticated;
-- Postgres' own default (EXECUTE for PUBLIC, which anon and authenticated
-- are part of), for every function the migrations' role creates anywhere.
alter default privileges revoke execute on functions from public;
alter default privileges in schema public revoke execute on functions from public;
