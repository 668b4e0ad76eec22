"""The app's calls on the policy model: spends, their reversals, holds (docs/interface.md).

Spends make the end state depend on when they happened, so this part of the
model replays what happened in order: each Stripe event delivered (the
declarative model then says what the delivered set grants) and each call
the app made in between.

- Plan credits are exact: `max(0, allowance - clawed back - plan credits
  spent in the current period)`, where a spend counts against the period
  that was current when it was made, and a reversal gives plan credits back
  only while that period is still current.
- Add-on credits are bounded, not exact: never more than the packs paid
  for, net of refunds and disputes; never less than that less what spends
  took from them. Where they land in between depends on timing (a
  clawback that finds them spent stops at zero and records a shortfall,
  which credits coming back with a reversed spend pay first).
- Holds are exact given the balance: a hold sets credits aside; spends and
  new holds draw only on what is available (balance less live holds); a
  commit spends at most what is held (plan first) and frees the rest; when
  the balance falls below what is held, the newest holds shrink to fit.
  Holds here never expire (the tests give them a long time to live).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.simulation.model import Catalog, UserState, World

PeriodKey = tuple[str, int] | None  # None: the signup grant, before any paid period


class InsufficientCredits(Exception):
    """The model's PT402: fewer credits are available than asked for."""


@dataclass
class SpendRecord:
    user: str
    amount: int
    from_plan: int
    from_addon: int
    period: PeriodKey  # the plan period current when it was spent
    reversed: bool = False


@dataclass
class Hold:
    user: str
    requested: int
    amount: int  # what is set aside now (a shrink may have taken some)
    order: int  # newer holds have larger numbers; they shrink first
    status: str = "held"  # held, committed or released


@dataclass(frozen=True)
class Draw:
    """Where a spend or a commit took its credits from."""

    from_plan: int
    from_addon: int


class CallsModel:
    """Deliveries and the app's calls, in the order they happened, for a few users."""

    def __init__(self, catalog: Catalog, users: Iterable[str]) -> None:
        self.catalog = catalog
        self.users = [str(user) for user in users]
        self.delivered: dict[str, Mapping[str, Any]] = {}
        self.world = World([], catalog, self.users)
        self.spent: dict[tuple[str, PeriodKey], int] = defaultdict(int)
        self.addon_spent: dict[str, int] = defaultdict(int)  # net of reversals
        self.spends: dict[tuple[str, str], SpendRecord] = {}
        self.holds: dict[tuple[str, str], Hold] = {}
        self._hold_order = 0

    # -- deliveries -----------------------------------------------------------------------

    def deliver(self, typed: Mapping[str, Any]) -> None:
        """One more event applied: the declarative model of the new set takes over."""
        self.delivered.setdefault(typed["id"], typed)
        self.world = World(self.delivered.values(), self.catalog, self.users)

    def period_of(self, user: str) -> PeriodKey:
        period = self.world.current_period(user)
        return None if period is None else period.key

    def plan_credits(self, user: str) -> int:
        return max(0, self.world.plan_ceiling(user) - self.spent[(user, self.period_of(user))])

    def addon_bounds(self, user: str) -> tuple[int, int]:
        """(least, most) add-on credits the user may hold now."""
        paid = self.world.addon_credits(user)
        return max(0, paid - self.addon_spent[user]), paid

    def status_of(self, user: str) -> str | None:
        return self.world.book.status_of(user)

    def paid_for_now(self, user: str) -> int:
        """The money model: plan credits the current period's payments still cover."""
        period = self.world.current_period(user)
        ceiling = self.catalog.signup_credits if period is None else period.paid_for
        return max(0, ceiling - self.spent[(user, self.period_of(user))])

    # -- spends ---------------------------------------------------------------------------

    def _draw(self, user: str, amount: int, addon_now: int) -> Draw:
        """Take `amount` plan credits first, then add-on; counted against the period."""
        from_plan = min(self.plan_credits(user), amount)
        self.spent[(user, self.period_of(user))] += from_plan
        self.addon_spent[user] += amount - from_plan
        assert amount - from_plan <= addon_now, "the add-on part must be there"
        return Draw(from_plan, amount - from_plan)

    def available(self, user: str, addon_now: int) -> int:
        total = self.plan_credits(user) + addon_now
        return total - min(self.held(user), total)

    def spend(self, user: str, amount: int, key: str, addon_now: int) -> Draw:
        """spend_credits: all or nothing from what is available; a repeated key spends nothing.

        `addon_now` is the add-on balance the engine holds (the model only bounds it).
        """
        if (user, key) in self.spends:
            first = self.spends[(user, key)]
            return Draw(first.from_plan, first.from_addon)
        if amount > self.available(user, addon_now):
            raise InsufficientCredits(user, amount)
        period = self.period_of(user)
        draw = self._draw(user, amount, addon_now)
        self.spends[(user, key)] = SpendRecord(user, amount, *_parts(draw), period)
        return draw

    def reverse(self, user: str, key: str) -> None:
        """reverse_spend: plan credits back only within the period they came from, once."""
        record = self.spends[(user, key)]
        if record.reversed:
            return
        record.reversed = True
        if record.period == self.period_of(user):
            spent = self.spent[(user, record.period)]
            self.spent[(user, record.period)] = spent - min(record.from_plan, spent)
        self.addon_spent[user] -= record.from_addon

    # -- holds ----------------------------------------------------------------------------

    def held(self, user: str) -> int:
        return sum(h.amount for h in self.holds.values() if h.user == user and h.status == "held")

    def reserve(self, user: str, amount: int, key: str, addon_now: int) -> None:
        if (user, key) in self.holds:
            return
        if amount > self.available(user, addon_now):
            raise InsufficientCredits(user, amount)
        self._hold_order += 1
        self.holds[(user, key)] = Hold(user, amount, amount, self._hold_order)

    def commit(self, user: str, key: str, amount: int | None, addon_now: int) -> Draw | None:
        """Spend at most what is held (null: all of it), free the rest; once."""
        hold = self.holds[(user, key)]
        if hold.status != "held":
            return None
        taken = hold.amount if amount is None else min(amount, hold.amount)
        hold.status, hold.amount = "committed", 0
        return self._draw(user, taken, addon_now) if taken > 0 else Draw(0, 0)

    def release(self, user: str, key: str) -> None:
        hold = self.holds[(user, key)]
        if hold.status == "held":
            hold.status, hold.amount = "released", 0

    def fit_holds(self, user: str, total: int) -> None:
        """The newest holds shrink until what is held fits in the balance."""
        excess = self.held(user) - total
        live = [h for h in self.holds.values() if h.user == user and h.status == "held"]
        for hold in sorted(live, key=lambda h: h.order, reverse=True):
            if excess <= 0:
                break
            cut = min(hold.amount, excess)
            hold.amount -= cut
            excess -= cut

    def state_of(self, user: str, addon_now: int) -> UserState:
        return UserState(self.plan_credits(user), addon_now, self.status_of(user))


def _parts(draw: Draw) -> tuple[int, int]:
    return draw.from_plan, draw.from_addon
