-- What the sidecar needs for Checkout and the Customer Portal: storing the
-- link between a Stripe customer and a user (which applies the events parked
-- for that customer), and reading a user's billing profile.

create function public.link_stripe_customer(user_id uuid, customer_id text) returns void
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  v_linked_user_id uuid;
begin
  if link_stripe_customer.user_id is null then
    raise exception using errcode = '22023', message = 'user_id is required';
  end if;
  if link_stripe_customer.customer_id is null
     or btrim(link_stripe_customer.customer_id) = ''
     or length(link_stripe_customer.customer_id) > 255 then
    raise exception using errcode = '22023',
      message = 'customer_id is required (a Stripe customer id, cus_...)';
  end if;
  if not exists (select 1 from auth.users u where u.id = link_stripe_customer.user_id) then
    raise exception using errcode = 'PT404',
      message = format('unknown user %s', link_stripe_customer.user_id);
  end if;
  perform tally.lock_key('customer:' || link_stripe_customer.customer_id);
  select c.user_id into v_linked_user_id from tally.customers c
   where c.customer_id = link_stripe_customer.customer_id;
  if v_linked_user_id is not null and v_linked_user_id <> link_stripe_customer.user_id then
    raise exception using errcode = '23505',
      message = format('customer %s is already linked to another user',
                       link_stripe_customer.customer_id);
  end if;
  perform tally.open_account(link_stripe_customer.user_id);
  perform tally.link_customer(link_stripe_customer.customer_id, link_stripe_customer.user_id,
                              'link_stripe_customer');
end;
$$;

comment on function public.link_stripe_customer(uuid, text) is
  'Link a Stripe customer to a user and apply the events parked for that customer.';

revoke all on function public.link_stripe_customer(uuid, text) from public, anon, authenticated;
grant execute on function public.link_stripe_customer(uuid, text) to service_role;

-- The billing customer is the one the sidecar created for the user (link
-- source 'link_stripe_customer'), the oldest such link if several: a customer
-- linked later by an event never takes over the portal or later checkouts.
-- Only when the sidecar never made one, the oldest event-made link.
-- active_subscription is the user's newest subscription that still counts
-- (null when none); current_period_end in Unix seconds, as Stripe writes it.
create function public.get_billing_profile(user_id uuid) returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select jsonb_build_object(
    'user_exists', exists (select 1 from auth.users u where u.id = get_billing_profile.user_id),
    'customer_id', (select c.customer_id from tally.customers c
                     where c.user_id = get_billing_profile.user_id
                     order by c.source <> 'link_stripe_customer', c.linked_at, c.customer_id
                     limit 1),
    'has_active_subscription', exists (
      select 1 from tally.subscriptions s
       where s.user_id = get_billing_profile.user_id
         and s.status in ('active', 'trialing', 'past_due', 'unpaid', 'paused')),
    'active_subscription', (
      select jsonb_build_object(
               'id', s.subscription_id,
               'price_id', s.price_id,
               'plan_key', p.key,
               'status', s.status,
               'current_period_end', extract(epoch from s.current_period_end)::bigint)
        from tally.subscriptions s
        left join public.plans p on p.stripe_price_id = s.price_id
       where s.user_id = get_billing_profile.user_id
         and s.status in ('active', 'trialing', 'past_due', 'unpaid', 'paused')
       order by s.subscription_created_at desc nulls last, s.subscription_id
       limit 1));
$$;

comment on function public.get_billing_profile(uuid) is
  'For the sidecar: does the user exist, their billing customer, and their active subscription.';

revoke all on function public.get_billing_profile(uuid) from public, anon, authenticated;
grant execute on function public.get_billing_profile(uuid) to service_role;

-- Nothing in tally is callable by clients; the functions above are the door.
revoke all on all functions in schema tally from public, anon, authenticated;
