-- The free signup grant: every user (a row in auth.users) gets an account,
-- and a non-anonymous user the signup credits of tally.settings, exactly
-- once. An anonymous user (auth.users.is_anonymous) gets an account with
-- nothing until it converts (is_anonymous becomes false), then the grant,
-- once: signing in anonymously again and again farms nothing. Users that
-- existed before this migration get the same (the backfill at the end).

create function tally.is_anonymous(p_user_id uuid) returns boolean
language plpgsql
stable
as $$
begin
  return (select coalesce((select u.is_anonymous from auth.users u where u.id = p_user_id), false));
end;
$$;

revoke all on function tally.is_anonymous(uuid) from public, anon, authenticated;

-- Give the signup grant to a locked account, once. The grant is the plan
-- allowance of "no subscription yet"; once a subscription period is paid,
-- plan credits are that period's and the grant would not stack, so a user
-- converting after subscribing gets a zero entry saying so.
create function tally.grant_signup(p_account tally.accounts) returns void
language plpgsql
as $$
declare
  v_credits integer;
begin
  if p_account.has_signup_grant then
    return;
  end if;
  select signup_credits into v_credits from tally.settings;
  update tally.accounts set has_signup_grant = true where user_id = p_account.user_id;
  if p_account.period_start is not null then
    perform tally.post_entry(p_account.user_id, 'signup', 0, 0, tally.cause(
      'Free signup credits not added: a paid subscription period is current',
      p_business_key => 'signup:' || p_account.user_id));
    return;
  end if;
  update tally.accounts set plan_allowance = v_credits where user_id = p_account.user_id;
  perform tally.post_entry(
    p_account.user_id, 'signup',
    greatest(0, v_credits - p_account.plan_spent) - p_account.plan_credits, 0,
    tally.cause(format('Free signup credits: %s', v_credits),
                p_business_key => 'signup:' || p_account.user_id));
end;
$$;

revoke all on function tally.grant_signup(tally.accounts) from public, anon, authenticated;

-- The user's account, created (and granted, unless anonymous) if missing.
create function tally.open_account(p_user_id uuid) returns void
language plpgsql
as $$
begin
  insert into tally.accounts (user_id) values (p_user_id)
  on conflict (user_id) do nothing;
  if found and not tally.is_anonymous(p_user_id) then
    perform tally.grant_signup(tally.lock_account(p_user_id));
  end if;
end;
$$;

revoke all on function tally.open_account(uuid) from public, anon, authenticated;

-- Auth inserts and updates users as its own role, so the triggers act as
-- the owner.
create function tally.on_user_created() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform tally.open_account(new.id);
  return new;
end;
$$;

revoke all on function tally.on_user_created() from public, anon, authenticated;

create trigger open_account_on_signup
  after insert on auth.users
  for each row execute function tally.on_user_created();

create function tally.on_user_converted() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform tally.open_account(new.id);
  perform tally.grant_signup(tally.lock_account(new.id));
  return new;
end;
$$;

revoke all on function tally.on_user_converted() from public, anon, authenticated;

create trigger grant_signup_credits_on_conversion
  after update of is_anonymous on auth.users
  for each row
  when (old.is_anonymous and not new.is_anonymous)
  execute function tally.on_user_converted();

select tally.open_account(id) from auth.users order by id;
