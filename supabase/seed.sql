-- Demo catalog for local development, tests and the demo. The price ids are
-- obviously fake: put your own Stripe test-mode price ids here (or insert
-- them in production with the service role).
insert into public.plans (key, name, stripe_price_id, monthly_credits) values
  ('starter', 'Starter', 'price_starter_monthly_fake', 1000),
  ('pro', 'Pro', 'price_pro_monthly_fake', 5000)
on conflict (key) do nothing;

insert into public.credit_packs (key, name, stripe_price_id, credits) values
  ('pack_500', '500 credits', 'price_pack_500_fake', 500),
  ('pack_2000', '2,000 credits', 'price_pack_2000_fake', 2000)
on conflict (key) do nothing;
