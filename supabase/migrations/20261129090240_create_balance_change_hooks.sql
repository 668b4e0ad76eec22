-- What every change of a balance does after its ledger entry (called by
-- tally.post_entry): holds shrink to fit a lowered balance, the app's
-- balance events are queued, and the new balance is broadcast.

create function tally.after_balance_change(p_account tally.accounts,
                                           p_entry tally.ledger_entries)
returns void
language plpgsql
as $$
declare
  v_total integer := p_account.plan_credits + p_account.addon_credits;
  v_change integer := p_entry.plan_delta + p_entry.addon_delta;
  v_held integer := tally.held_credits(p_account.user_id);
  v_before integer := least(v_held, v_total - v_change);
begin
  v_before := v_total - v_change - v_before;
  if v_held > v_total then
    v_held := tally.fit_holds(p_account.user_id, v_total);
  end if;
  -- A commit spends what its hold had already set aside: available credits
  -- never go down (what it frees comes back), so it crosses nothing. Its
  -- hold is finished before the entry, so the sum above would count those
  -- credits as available before, and see a crossing that was the reserve's.
  if p_entry.kind <> 'hold_commit' then
    perform tally.emit_balance_events(
      p_account, v_held, v_before,
      -- A paid period is a grant even when nothing was spent in the last
      -- one (plan credits stay where they were): the app hears of it.
      case when p_entry.kind = 'subscription_period' then greatest(v_change, 0)
           when tally.is_grant(p_entry.kind) and v_change > 0 then v_change end,
      p_entry.kind);
  end if;
  if v_change <> 0 then
    perform tally.broadcast_balance(p_account, v_held);
  end if;
end;
$$;

revoke all on function tally.after_balance_change(tally.accounts, tally.ledger_entries)
  from public, anon, authenticated;
