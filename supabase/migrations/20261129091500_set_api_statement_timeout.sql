-- A server-side time bound for the calls the sidecar makes through
-- PostgREST. PostgREST applies the settings of the role it switches to for
-- a request (its "impersonated role settings"), so a statement_timeout on
-- service_role stops a call the client gave up on instead of leaving it
-- running. (A statement_timeout set inside a function does not bound the
-- statement already running; lock waits are bounded in each function with
-- lock_timeout.) The project's own setting wins: it is only added when none
-- exists, and a project whose migration role may not change service_role
-- keeps going with a notice (docs/deployment.md says how to set it).

do $$
begin
  if not exists (
    select 1 from pg_db_role_setting s
     where s.setrole = 'service_role'::regrole and s.setdatabase = 0
       and exists (select 1 from unnest(s.setconfig) c where c like 'statement_timeout=%')
  ) then
    alter role service_role set statement_timeout = '30s';
  end if;
exception
  when insufficient_privilege then
    raise notice 'service_role statement_timeout left as it is: %', sqlerrm;
end
$$;
