-- The free signup grant: every row in auth.users gets an account with the
-- signup credits from tally.settings, exactly once. Users that existed
-- before this migration get it too (the backfill at the end).

create function tally.open_account(p_user_id uuid) returns boolean
language plpgsql
set search_path = ''
as $$
declare
  v_signup_credits integer;
begin
  select signup_credits into v_signup_credits from tally.settings;
  insert into tally.accounts (user_id, plan_allowance)
  values (p_user_id, v_signup_credits)
  on conflict (user_id) do nothing;
  if not found then
    return false;
  end if;
  perform tally.post_entry(p_user_id, 'signup', v_signup_credits, 0,
                           p_business_key => 'signup:' || p_user_id);
  return true;
end;
$$;

revoke all on function tally.open_account(uuid) from public, anon, authenticated;

-- Auth inserts users as its own role, so the trigger acts as the owner.
create function tally.grant_signup_credits() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform tally.open_account(new.id);
  return new;
end;
$$;

revoke all on function tally.grant_signup_credits() from public, anon, authenticated;

create trigger grant_signup_credits_on_signup
  after insert on auth.users
  for each row execute function tally.grant_signup_credits();

select tally.open_account(id) from auth.users order by id;
