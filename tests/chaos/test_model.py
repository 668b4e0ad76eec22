"""The Python model of the credit policy, checked on hand-worked examples from docs/policy.md.

Events are built the one way the product builds them: complete Stripe events
turned into typed events by the sidecar's own normaliser
(`tests.support.typed_events`), in the seed catalog (starter 1,000 credits a
month for $9, pro 5,000 for $29). No database: these pin the model itself,
which the chaos tests then hold the engine to.
"""

from __future__ import annotations

import itertools
import uuid

import pytest

from tests.chaos.conftest import PRICES
from tests.simulation.calls import CallsModel, InsufficientCredits
from tests.simulation.database import CHAOS_PACKS, CHAOS_PLANS
from tests.simulation.model import Catalog, UserState, World, expected_states
from tests.simulation.stories import new_user_ids, write_stories
from tests.simulation.typed import typed_events
from tests.support import typed_events as te

CATALOG = Catalog(
    plans={price: credits for price, credits in te.PLANS.values()},
    packs={price: credits for price, credits in te.PACKS.values()},
)
STARTER, PRO = te.PLANS["starter"][1], te.PLANS["pro"][1]
USER = str(uuid.UUID(int=1))
OTHER = str(uuid.UUID(int=2))
HALF = te.PERIOD // 2


def state(events, user: str = USER) -> UserState:
    return expected_states(events, CATALOG, [USER, OTHER])[user]


def plan(events) -> int:
    return state(events).plan_credits


@pytest.fixture(params=["basil", "legacy"])
def buyer(request) -> te.Buyer:
    return te.Buyer.new(USER, layout=request.param)


@pytest.fixture
def sub(buyer) -> te.Subscription:
    return buyer.subscription("starter")


def share(credits: int, after: int) -> int:
    """What a proration line of `credits` a month pays for `after` seconds into the period."""
    return credits * (te.PERIOD - after) // te.PERIOD


# -- periods ------------------------------------------------------------------------------


def test_a_new_user_has_the_signup_grant_and_nothing_else():
    assert state([]) == UserState(500, 0, None)


def test_a_paid_first_period_sets_plan_credits_to_the_plan_allowance(sub):
    events = [sub.created(), sub.invoice_paid(period=0)]
    assert state(events) == UserState(STARTER, 0, "active")


def test_a_renewal_resets_plan_credits_to_the_new_period_plan(sub):
    events = [sub.invoice_paid(period=0), sub.invoice_paid(period=1, plan="pro")]
    assert plan(events) == PRO


def test_an_older_period_arriving_last_changes_nothing(sub):
    assert plan([sub.invoice_paid(period=1, plan="pro"), sub.invoice_paid(period=0)]) == PRO


def test_a_zero_invoice_counts_as_paid(sub):
    assert plan([sub.invoice_paid(period=0, amount_paid=0)]) == STARTER


def test_a_failed_invoice_grants_nothing_and_marks_the_subscription_past_due(sub):
    events = [sub.created(), sub.invoice_failed(period=0, created=te.at(0, 20))]
    assert state(events) == UserState(500, 0, "past_due")


@pytest.mark.parametrize(
    ("billing_reason", "status"),
    [
        ("subscription_create", "incomplete"),
        ("subscription_cycle", "past_due"),
        ("subscription_update", None),  # a failed change says nothing of the status
    ],
)
def test_a_failed_invoice_of_an_unknown_subscription_says_how_far_it_got(
    sub, billing_reason, status
):
    events = [sub.invoice_failed(period=0, billing_reason=billing_reason)]
    assert state(events).subscription_status == status


def test_a_failed_upgrade_invoice_leaves_the_status_its_subscription_events_say(sub):
    # payment_behavior=pending_if_incomplete: Stripe keeps the subscription active
    # (an update in the same second shows only the pending change).
    failed = sub.proration_invoice(period=0, from_plan="starter", to_plan="pro",
                                   at_time=te.at(0, HALF), paid=False)  # fmt: skip
    pending = sub.updated(period=0, created=te.at(0, HALF))
    events = [sub.created(), sub.invoice_paid(period=0), failed, pending]
    for order in itertools.permutations(events):
        assert state(list(order)) == UserState(STARTER, 0, "active")
    past_due = sub.updated(period=0, status="past_due", previous={"status": "active"},
                           created=te.at(0, HALF))  # fmt: skip
    assert state([*events[:3], past_due]).subscription_status == "past_due"


def test_an_invoice_paid_event_whose_invoice_is_not_paid_counts_as_a_failed_payment(sub):
    events = [sub.created(), sub.invoice_paid(period=0, status="open", created=te.at(0, 20))]
    assert state(events) == UserState(500, 0, "past_due")


def test_an_invoice_for_an_unknown_price_is_rejected_and_leaves_no_state(sub):
    unknown = sub.invoice_paid(period=0, price_id="price_nobody_sells")
    assert state([unknown]) == UserState(500, 0, None)


def metered_only(sub, *, billing_reason: str, paid: bool = True, period: int = 0):
    line = te.invoice_line(price_id="price_metered_api_calls", period_start=te.at(period),
                           period_end=te.at(period + 1), subscription_id=sub.subscription_id,
                           layout=sub.layout)  # fmt: skip
    invoice = sub.invoice_paid if paid else sub.invoice_failed
    return invoice(period=period, lines=[line], billing_reason=billing_reason,
                   created=te.at(period, 900))  # fmt: skip


def test_a_metered_only_invoice_of_a_subscription_on_a_plan_grants_nothing_but_counts(sub):
    events = [sub.created(), sub.invoice_paid(period=0)]
    paid = metered_only(sub, billing_reason="subscription_threshold")
    assert state([*events, paid]) == UserState(STARTER, 0, "active")
    failed = metered_only(sub, billing_reason="subscription_threshold", paid=False)
    assert state([*events, failed]) == UserState(STARTER, 0, "past_due")


def test_a_metered_only_invoice_of_a_subscription_with_no_plan_is_rejected(sub):
    failed = metered_only(sub, billing_reason="subscription_threshold", paid=False)
    assert state([failed]) == UserState(500, 0, None)


def test_a_paid_renewal_whose_only_line_is_metered_is_rejected(sub):
    events = [sub.created(), sub.invoice_paid(period=0)]
    renewal = metered_only(sub, billing_reason="subscription_cycle", paid=True, period=1)
    failed_renewal = sub.invoice_failed(period=1, created=te.at(1, 100))
    # Not applied: paid after the failed renewal, it would make it active again.
    assert state([*events, failed_renewal, renewal]) == UserState(STARTER, 0, "past_due")


def test_a_subscription_event_for_an_unknown_price_is_rejected(sub):
    assert state([sub.created(price_id="price_nobody_sells")]) == UserState(500, 0, None)


def test_an_invoice_billing_two_catalog_plans_is_rejected(sub):
    lines = [
        te.invoice_line(price_id=te.plan_price(key), period_start=te.at(0),
                        period_end=te.at(1), subscription_id=sub.subscription_id)
        for key in ("starter", "pro")
    ]  # fmt: skip
    assert state([sub.invoice_paid(period=0, lines=lines)]) == UserState(500, 0, None)


def test_a_plan_line_without_a_whole_period_pays_nothing(sub):
    paid = sub.invoice_paid(period=0)
    paid["invoice"]["lines"][0]["period_end"] = None
    assert state([paid]) == UserState(500, 0, None)


def test_a_period_starting_after_the_subscription_ended_is_not_granted(sub):
    events = [
        sub.invoice_paid(period=0),
        sub.deleted(period=0, ended_at=te.at(0, HALF)),
        sub.invoice_paid(period=1, plan="pro"),
    ]
    assert state(events) == UserState(STARTER, 0, "canceled")


def test_a_cancelled_subscription_stays_cancelled_whatever_comes_later(sub):
    events = [sub.deleted(period=0, ended_at=te.at(0, 50)), sub.updated(created=te.at(0, 60))]
    assert state(events).subscription_status == "canceled"


def test_a_period_paid_before_a_scheduled_cancellation_is_still_granted(sub):
    events = [
        sub.invoice_paid(period=0),
        sub.updated(period=0, cancel_at_period_end=True, created=te.at(0, HALF),
                    previous={"cancel_at_period_end": False}),
        sub.invoice_paid(period=1, plan="pro"),
    ]  # fmt: skip
    assert plan(events) == PRO


def test_a_tie_between_updates_is_decided_by_the_state_each_one_left(sub):
    at = te.at(0, 9)
    left_active = sub.updated(status="past_due", previous={"status": "active"}, created=at)
    came_back = sub.updated(status="active", previous={"status": "incomplete"}, created=at)
    for order in ([left_active, came_back], [came_back, left_active]):
        assert state(order).subscription_status == "past_due"


# -- plan changes -------------------------------------------------------------------------


def upgrade(sub: te.Subscription, after: int, to: str = "pro", frm: str = "starter", **kw):
    return sub.upgrade(period=0, plan=to, from_plan=frm, at_time=te.at(0, after), **kw)


def test_an_upgrade_without_its_paid_invoice_adds_nothing(sub):
    change = sub.plan_changed(period=0, plan="pro", previous_plan="starter",
                              created=te.at(0, HALF))  # fmt: skip
    assert plan([sub.invoice_paid(period=0), change]) == STARTER


def test_an_upgrade_at_the_very_start_of_a_period_gives_the_whole_new_allowance(sub):
    assert plan([sub.invoice_paid(period=0), *upgrade(sub, after=0)]) == PRO


def test_a_created_event_in_the_second_of_an_upgrade_lowers_nothing(sub):
    # Same second, order unknown: the created event showing starter may come first.
    created = sub.created(created=te.at(0))
    assert plan([sub.invoice_paid(period=0), created, *upgrade(sub, after=0)]) == PRO


def test_an_upgrade_with_half_the_period_left_gives_half_the_difference(sub):
    events = [sub.invoice_paid(period=0), *upgrade(sub, after=HALF)]
    assert plan(events) == STARTER + share(PRO - STARTER, HALF)


def test_an_upgrade_ends_the_same_in_every_arrival_order(sub):
    events = [sub.invoice_paid(period=0), *upgrade(sub, after=HALF)]
    for order in itertools.permutations(events):
        assert plan(list(order)) == STARTER + (PRO - STARTER) // 2


def test_an_unpaid_upgrade_invoice_adds_nothing_until_it_is_paid(sub):
    change, failed = upgrade(sub, after=HALF, paid=False)
    assert plan([sub.invoice_paid(period=0), change, failed]) == STARTER
    paid = sub.proration_invoice(period=0, from_plan="starter", to_plan="pro",
                                 at_time=te.at(0, HALF), invoice_id=failed["invoice"]["id"],
                                 created=te.at(0, HALF + te.DAY))  # fmt: skip
    assert plan([sub.invoice_paid(period=0), change, failed, paid]) == STARTER + 2000


def test_an_upgrade_invoice_of_an_older_period_changes_nothing(sub):
    events = [sub.invoice_paid(period=0), sub.invoice_paid(period=1), *upgrade(sub, after=HALF)]
    assert plan(events) == STARTER


def test_an_upgrade_then_a_switch_back_leaves_only_what_was_paid_for(sub):
    events = [
        sub.invoice_paid(period=0),
        *upgrade(sub, after=HALF),
        *upgrade(sub, after=HALF + te.DAY, to="starter", frm="pro"),
    ]
    assert plan(events) == STARTER


@pytest.mark.parametrize("order", ["in-order", "reversed", "invoices-first"])
def test_a_same_second_upgrade_and_downgrade_add_nothing_beyond_the_old_plan(sub, order):
    up_change, up_paid = upgrade(sub, after=HALF)
    down_change, down_paid = upgrade(sub, after=HALF, to="starter", frm="pro")
    events = {
        "in-order": [up_change, up_paid, down_change, down_paid],
        "reversed": [down_paid, down_change, up_paid, up_change],
        "invoices-first": [down_paid, up_paid, down_change, up_change],
    }[order]
    assert plan([sub.invoice_paid(period=0), *events]) == STARTER


def test_an_immediate_downgrade_lowers_the_allowance_at_once(buyer):
    sub = buyer.subscription("pro")
    change = sub.plan_changed(period=0, plan="starter", previous_plan="pro",
                              created=te.at(0, HALF))  # fmt: skip
    assert plan([change, sub.invoice_paid(period=0)]) == STARTER


def test_a_cancellation_showing_a_lower_plan_lowers_the_allowance_before_its_update(buyer):
    sub = buyer.subscription("pro")
    change = sub.plan_changed(period=0, plan="starter", previous_plan="pro",
                              created=te.at(0, HALF))  # fmt: skip
    ended = sub.deleted(period=0, plan="starter", ended_at=te.at(0, HALF + 60))
    assert plan([sub.invoice_paid(period=0), ended]) == STARTER
    assert plan([sub.invoice_paid(period=0), ended, change]) == STARTER


def test_a_cancellation_after_a_paid_upgrade_keeps_what_the_upgrade_paid_for(sub):
    up_at, down_at = te.at(0, HALF), te.at(0, HALF + te.DAY)
    events = [
        sub.invoice_paid(period=0),
        *sub.there_and_back(period=0, plan="pro", up_at=up_at, down_at=down_at),
    ]
    cancelled = sub.updated(
        period=0,
        cancel_at_period_end=True,
        previous={"cancel_at_period_end": False},
        created=down_at + 10,
    )
    paid_day_of_pro = (PRO - STARTER) // 30
    assert plan(events) == STARTER + paid_day_of_pro
    assert plan([*events, cancelled]) == STARTER + paid_day_of_pro


def test_a_downgrade_billed_at_once_adds_nothing_for_its_credit_lines(buyer):
    sub = buyer.subscription("pro")
    events = [sub.invoice_paid(period=0), *upgrade(sub, after=HALF, to="starter", frm="pro")]
    assert plan(events) == STARTER


def test_a_downgrade_scheduled_for_the_period_end_changes_nothing_until_the_next_period(buyer):
    sub = buyer.subscription("pro")
    events = [sub.invoice_paid(period=0), sub.updated(period=0, created=te.at(0, HALF))]
    assert plan(events) == PRO
    renewal = sub.updated(period=1, plan="starter", created=te.at(1, 1),
                          previous={"price_id": te.plan_price("pro"),
                                    "current_period_start": te.at(0)})  # fmt: skip
    assert plan([*events, sub.invoice_paid(period=1, plan="starter"), renewal]) == STARTER


def test_a_change_billed_with_the_next_renewal_adds_nothing_to_the_old_period(sub):
    change = sub.plan_changed(period=0, plan="pro", previous_plan="starter",
                              created=te.at(0, HALF))  # fmt: skip
    prorations = sub.proration_invoice(period=0, from_plan="starter", to_plan="pro",
                                       at_time=te.at(0, HALF))  # fmt: skip
    lines = [
        *prorations["raw"]["data"]["object"]["lines"]["data"],
        te.invoice_line(price_id=te.plan_price("pro"), period_start=te.at(1),
                        period_end=te.at(2), subscription_id=sub.subscription_id,
                        layout=sub.layout),
    ]  # fmt: skip
    events = [sub.invoice_paid(period=0), change]
    assert plan(events) == STARTER
    assert plan([*events, sub.invoice_paid(period=1, plan="pro", lines=lines)]) == PRO


def test_a_lines_share_is_of_its_subscription_period_not_of_the_invoices_dates(sub):
    paid = sub.proration_invoice(period=0, from_plan="starter", to_plan="pro",
                                 at_time=te.at(0, HALF))  # fmt: skip
    raw = paid["raw"]["data"]["object"]
    raw["period_start"], raw["period_end"] = te.at(0, HALF), te.at(0, HALF)
    assert plan([sub.invoice_paid(period=0), te.typed(paid["raw"])]) == STARTER + 2000


def test_an_upgrade_paid_while_the_renewal_is_unpaid_counts_once_the_renewal_is_paid(sub):
    events = [
        sub.invoice_paid(period=0),
        sub.invoice_failed(period=1, created=te.at(1, 5)),
        *sub.upgrade(period=1, plan="pro", at_time=te.at(1, 600)),
        sub.invoice_paid(period=1, created=te.at(1, 3 * te.DAY), invoice_created=te.at(1, 5)),
    ]
    assert plan(events) == STARTER + share(PRO - STARTER, 600)


def test_an_upgrade_waiting_for_its_payment_counts_once_paid_whatever_came_in_between(sub):
    # payment_behavior=pending_if_incomplete: the invoice fails, the subscription
    # stays on starter (an update shows only the pending change), the retry pays
    # the invoice and only then moves it to pro. The customer paid for the change.
    failed = sub.proration_invoice(period=0, from_plan="starter", to_plan="pro",
                                   at_time=te.at(0, HALF), paid=False)  # fmt: skip
    pending = sub.updated(period=0, plan="starter", created=te.at(0, HALF + 2))
    paid = sub.proration_invoice(period=0, from_plan="starter", to_plan="pro",
                                 at_time=te.at(0, HALF), invoice_id=failed["invoice"]["id"],
                                 created=te.at(0, HALF + te.DAY))  # fmt: skip
    moved = sub.plan_changed(period=0, plan="pro", previous_plan="starter",
                             created=te.at(0, HALF + te.DAY + 2))  # fmt: skip
    events = [sub.invoice_paid(period=0), failed, pending, paid, moved]
    assert plan(events) == STARTER + 2000
    # Before the move is delivered: the update showing starter changed no plan (it came
    # before the payment), so what the paid invoice pays for already counts.
    assert plan(events[:-1]) == STARTER + 2000


def test_flip_flopping_plans_never_adds_more_than_was_paid(sub):
    events, paid_for, current = [sub.invoice_paid(period=0)], STARTER, "starter"
    for step in range(1, 6):
        new = "pro" if current == "starter" else "starter"
        events += upgrade(sub, after=step * te.DAY, to=new, frm=current)
        paid_for += share(PRO - STARTER, step * te.DAY) if new == "pro" else 0
        current = new
        assert plan(events) <= paid_for
    assert plan(events) == STARTER + share(PRO - STARTER, 5 * te.DAY)


# -- refunds and disputes of subscription invoices ------------------------------------------


def paid_with_its_payment(sub: te.Subscription, period: int = 0, **overrides):
    """A paid invoice and, from basil on, the invoice_payment.paid that joins its payment."""
    paid = sub.invoice_paid(period=period, **overrides)
    return [paid, sub.invoice_payment(paid)] if sub.layout == "basil" else [paid]


def test_a_refund_of_the_current_periods_invoice_takes_back_its_refunded_share(sub):
    paid = paid_with_its_payment(sub)
    amount = paid[0]["invoice"]["amount_paid"]
    refund = sub.refund(paid[0], amount_refunded=amount // 3)
    assert plan([*paid, refund]) == STARTER - (STARTER * (amount // 3) * 2 + amount) // (2 * amount)


def test_refunds_of_an_invoice_are_cumulative_not_added_up(sub):
    paid = paid_with_its_payment(sub)
    amount = paid[0]["invoice"]["amount_paid"]
    refunds = [sub.refund(paid[0], amount_refunded=part) for part in (amount // 2, amount // 2)]
    assert plan([*paid, *refunds]) == STARTER // 2


def test_a_basil_refund_waits_for_the_invoice_payment_that_names_its_invoice():
    sub = te.Buyer.new(USER, layout="basil").subscription("starter")
    paid = sub.invoice_paid(period=0)
    refund = sub.refund(paid, amount_refunded=paid["invoice"]["amount_paid"])
    assert plan([paid, refund]) == STARTER
    assert plan([paid, refund, sub.invoice_payment(paid)]) == 0


def test_a_refund_of_a_period_no_longer_current_changes_nothing(sub):
    paid = paid_with_its_payment(sub)
    refund = sub.refund(paid[0], amount_refunded=paid[0]["invoice"]["amount_paid"])
    assert plan([*paid, sub.invoice_paid(period=1), refund]) == STARTER


def test_a_refund_of_an_upgrade_takes_back_what_the_upgrade_added(sub):
    change, upgrade_paid = upgrade(sub, after=HALF)
    events = [sub.invoice_paid(period=0), change, upgrade_paid]
    if sub.layout == "basil":
        events.append(sub.invoice_payment(upgrade_paid))
    refund = sub.refund(upgrade_paid, amount_refunded=upgrade_paid["invoice"]["amount_paid"])
    assert plan([*events, refund]) == STARTER


def _upgraded_and_switched_back(sub: te.Subscription):
    """Starter's period paid, an upgrade to pro paid halfway (+2000), then back to
    starter at once a day later: the events, and the upgrade's paid invoice."""
    change, upgrade_paid = upgrade(sub, after=HALF)
    events = [*paid_with_its_payment(sub), change, upgrade_paid]
    if sub.layout == "basil":
        events.append(sub.invoice_payment(upgrade_paid))
    events += upgrade(sub, after=HALF + te.DAY, to="starter", frm="pro")
    return events, upgrade_paid


@pytest.mark.parametrize("given_back_at", [HALF + 600, HALF + te.DAY + 600],
                         ids=["before-the-downgrade", "after-the-downgrade"])  # fmt: skip
def test_a_refunded_upgrade_then_a_downgrade_keeps_the_paid_starter_period(sub, given_back_at):
    events, upgrade_paid = _upgraded_and_switched_back(sub)
    refund = sub.refund(upgrade_paid, amount_refunded=upgrade_paid["invoice"]["amount_paid"],
                        created=te.at(0, given_back_at))  # fmt: skip
    assert plan(events) == STARTER
    assert plan([*events, refund]) == STARTER  # not max(0, 1000 - 2000)
    period = World([*events, refund], CATALOG, [USER]).current_period(USER)
    assert (period.allowance, period.clawed_back) == (STARTER, 0)


@pytest.mark.parametrize("closing", [None, "won", "lost"])
def test_a_disputed_upgrade_then_a_downgrade_keeps_the_paid_starter_period(sub, closing):
    events, upgrade_paid = _upgraded_and_switched_back(sub)
    events.append(sub.dispute(upgrade_paid, dispute_id="dp_1", created=te.at(0, HALF + 600)))
    if closing:
        events.append(sub.dispute(upgrade_paid, dispute_id="dp_1", status=closing, closed=True,
                                  created=te.at(0, HALF + 2 * te.DAY)))  # fmt: skip
    assert plan(events) == STARTER


def test_a_refunded_upgrade_still_takes_back_what_it_added_until_the_downgrade(sub):
    events, upgrade_paid = _upgraded_and_switched_back(sub)
    without_downgrade = events[:-2]
    refund = sub.refund(upgrade_paid, amount_refunded=upgrade_paid["invoice"]["amount_paid"])
    period = World([*without_downgrade, refund], CATALOG, [USER]).current_period(USER)
    assert (period.allowance, period.clawed_back) == (STARTER + 2000, 2000)


@pytest.mark.parametrize(
    ("closing", "plan_credits"),
    [(None, 0), ("won", STARTER), ("lost", 0), ("warning_closed", STARTER)],
)
def test_a_dispute_of_the_periods_invoice_takes_it_back_until_it_is_won(sub, closing, plan_credits):
    paid = paid_with_its_payment(sub)
    events = [*paid, sub.dispute(paid[0], dispute_id="dp_1", created=te.at(0, 100))]
    if closing:
        events.append(sub.dispute(paid[0], dispute_id="dp_1", status=closing, closed=True,
                                  created=te.at(0, 200)))  # fmt: skip
    assert plan(events) == plan_credits


def test_a_dispute_after_a_partial_refund_takes_only_what_the_refund_left(sub):
    paid = paid_with_its_payment(sub)
    amount = paid[0]["invoice"]["amount_paid"]
    refund = sub.refund(paid[0], amount_refunded=amount // 2)
    dispute = sub.dispute(paid[0], dispute_id="dp_1", amount=amount - amount // 2)
    world = World([*paid, refund, dispute], CATALOG, [USER])
    period = world.current_period(USER)
    assert period.clawed_back == STARTER and plan([*paid, refund, dispute]) == 0


# -- packs --------------------------------------------------------------------------------


@pytest.fixture
def pack(buyer) -> te.PackPurchase:
    return buyer.pack_purchase("pack_500")


def test_a_paid_pack_adds_its_credits_once_whatever_events_announce_it(pack):
    events = [pack.completed(), pack.completed(), pack.async_succeeded()]
    assert state(events).addon_credits == 500


def test_an_unpaid_checkout_grants_nothing_until_the_async_payment_succeeds(pack):
    unpaid = pack.completed(payment_status="unpaid")
    assert state([unpaid, pack.async_failed()]).addon_credits == 0
    assert state([unpaid, pack.async_succeeded()]).addon_credits == 500


def test_a_pack_without_its_price_in_metadata_is_rejected(pack):
    assert state([pack.completed(metadata_price_id=None)]).addon_credits == 0


def test_a_partial_refund_claws_back_the_rounded_refunded_share(pack):
    assert state([pack.completed(), pack.refunded(amount_refunded=167)]).addon_credits == 333


def test_pack_refunds_are_cumulative_not_added_up(pack):
    refunds = [pack.refunded(amount_refunded=a) for a in (100, 250, 250)]
    assert state([pack.completed(), *refunds]).addon_credits == 250


@pytest.mark.parametrize(
    ("closing", "addon"), [(None, 0), ("won", 500), ("lost", 0), ("warning_closed", 500)]
)
def test_a_dispute_claws_back_the_pack_until_it_is_won(pack, closing, addon):
    events = [pack.completed(), pack.dispute(dispute_id="dp_1", created=te.at(0, 5))]
    if closing:
        events.append(pack.dispute(dispute_id="dp_1", status=closing, closed=True,
                                   created=te.at(0, 9)))  # fmt: skip
    assert state(events).addon_credits == addon


def test_a_refund_before_a_dispute_is_not_clawed_back_twice(pack):
    events = [pack.completed(), pack.refunded(amount_refunded=250), pack.dispute(dispute_id="dp")]
    assert state(events).addon_credits == 0


# -- users and customers ------------------------------------------------------------------


def test_an_event_without_user_or_linked_customer_is_parked(sub):
    assert state([sub.invoice_paid(period=0, subscription_metadata_user_id=None,
                                   customer_id="cus_nobody")]) == UserState(500, 0)  # fmt: skip


def test_an_event_naming_a_user_that_does_not_exist_grants_nothing(buyer):
    ghost = buyer.pack_purchase()
    ghost.user_id = str(uuid.UUID(int=99))
    assert state([ghost.completed()]).addon_credits == 0


def test_the_customer_link_resolves_events_that_name_no_user(buyer, pack):
    sub = buyer.subscription("starter", with_user_metadata=False)
    events = [pack.completed(), sub.invoice_paid(period=0)]
    assert state(events) == UserState(STARTER, 500, "active")


def test_a_rejected_event_never_links_its_customer(buyer, pack):
    sub = buyer.subscription("starter", with_user_metadata=False)
    rejected = pack.completed(metadata_price_id="price_nobody_sells")
    assert state([rejected, sub.invoice_paid(period=0)]) == UserState(500, 0)


def test_a_session_tally_did_not_make_links_no_customer(buyer, pack):
    sub = buyer.subscription("starter", with_user_metadata=False)
    foreign = pack.completed(metadata_user_id=OTHER)  # client_reference_id says USER
    assert state([foreign, sub.invoice_paid(period=0)]) == UserState(500, 500)


# -- the money model ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_no_period_of_any_story_grants_more_than_its_invoices_paid_for(seed):
    users = new_user_ids(seed, 150)
    events = typed_events(e for story in write_stories(seed, PRICES, users) for e in story.events)
    catalog = Catalog(
        {entry.price_id: entry.credits for entry in CHAOS_PLANS},
        {entry.price_id: entry.credits for entry in CHAOS_PACKS},
    )
    world = World(events, catalog, users)
    periods = list(world.book.periods.values())
    assert len(periods) > 100
    for period in periods:
        assert period.allowance - period.clawed_back <= period.paid_for, period
    assert any(len(p.grants) > 1 for p in periods)  # upgrades were paid
    assert any(p.clawed_back for p in periods)  # and some taken back


# -- the app's calls ----------------------------------------------------------------------


@pytest.fixture
def paid(sub) -> list:
    return paid_with_its_payment(sub)


@pytest.fixture
def calls(paid) -> CallsModel:
    model = CallsModel(CATALOG, [USER])
    for event in paid:
        model.deliver(event)
    return model


def test_spends_draw_plan_credits_first_and_refuse_what_is_not_available(calls):
    draw = calls.spend(USER, 900, "a", addon_now=50)
    assert (draw.from_plan, draw.from_addon) == (900, 0)
    assert calls.spend(USER, 140, "b", addon_now=50).from_addon == 40
    with pytest.raises(InsufficientCredits):
        calls.spend(USER, 11, "c", addon_now=10)
    assert calls.spend(USER, 900, "a", addon_now=10).from_plan == 900  # the same key: no spend
    assert calls.plan_credits(USER) == 0


def test_a_reversal_gives_plan_credits_back_only_within_their_period(calls, sub):
    calls.spend(USER, 300, "a", addon_now=0)
    calls.spend(USER, 200, "b", addon_now=0)
    calls.reverse(USER, "a")
    assert calls.plan_credits(USER) == STARTER - 200
    calls.deliver(sub.invoice_paid(period=1))
    calls.reverse(USER, "b")
    assert calls.plan_credits(USER) == STARTER


def test_a_clawback_counts_what_was_spent_this_period(calls, sub, paid):
    calls.spend(USER, 600, "a", addon_now=0)
    invoice = paid[0]
    calls.deliver(sub.refund(invoice, amount_refunded=invoice["invoice"]["amount_paid"] // 2))
    assert calls.plan_credits(USER) == 0
    assert calls.paid_for_now(USER) == 0


def test_holds_set_credits_aside_and_commit_at_most_what_they_hold(calls):
    calls.reserve(USER, 700, "h1", addon_now=0)
    with pytest.raises(InsufficientCredits):
        calls.spend(USER, 301, "s", addon_now=0)
    draw = calls.commit(USER, "h1", 900, addon_now=0)
    assert draw is not None and draw.from_plan == 700
    assert (calls.held(USER), calls.plan_credits(USER)) == (0, STARTER - 700)
    assert calls.commit(USER, "h1", 5, addon_now=0) is None  # once


def test_holds_shrink_newest_first_when_the_balance_falls_below_them(calls):
    calls.reserve(USER, 400, "old", addon_now=0)
    calls.reserve(USER, 500, "new", addon_now=0)
    calls.fit_holds(USER, 600)
    assert [calls.holds[(USER, key)].amount for key in ("old", "new")] == [400, 200]
    calls.release(USER, "new")
    assert calls.held(USER) == 400
