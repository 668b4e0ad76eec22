-- The live balance in the browser: every change of a balance is broadcast
-- from the database with Supabase Realtime on the private topic
-- credits:<user id>, and a row-level security policy on realtime.messages
-- lets a signed-in user receive only their own topic. The app subscribes
-- with supabase-js, `config: { private: true }` (docs/policy.md shows how).

create policy "Users receive only their own credit balance"
  on realtime.messages for select
  to authenticated
  using (
    realtime.messages.extension = 'broadcast'
    and (select realtime.topic()) = 'credits:' || (select auth.uid())::text
    and realtime.messages.topic = (select realtime.topic())
  );

create function tally.broadcast_balance(p_account tally.accounts, p_held integer) returns void
language sql
as $$
  select realtime.send(tally.balance_snapshot(p_account, p_held), 'balance',
                       'credits:' || p_account.user_id::text, true);
$$;

revoke all on function tally.broadcast_balance(tally.accounts, integer)
  from public, anon, authenticated;
