"""The confirmation's sequential test: pure, paired, robust, with a stated error rate.

A confirmation measures the baseline's artifact (A) and the candidate's (B) now, on the device,
launch by launch in ABBA BAAB... order; each adjacent A/B pair gives d = log(B) - log(A), in
which whatever the device is doing at that moment cancels. Interference slows some launches as a
whole (a neighbour, a descheduled thread): a launch more than `interference` above its arm's 10th
percentile is interfered, and a pair holding one is left out (the same rule for both arms, so under
no change the kept pairs stay symmetric). On the kept pairs:

- the estimate is Hodges-Lehmann's (the median of the Walsh averages of d), the ratio its exp;
- the test is Wilcoxon's signed-rank test, its exact null distribution (no normal approximation,
  no assumption on the shape of d beyond symmetry under no change), and the intervals are the
  matching order statistics of the Walsh averages.

The test looks at fixed pair counts (`LOOKS`) and stops at the first look that decides:
`regression` (slower at the look's level and the ratio past 1 + threshold), `improvement` (the
same the other way), or `unchanged`: no sign of a slowdown (one-sided p > 0.05) and the (1 - beta)
upper bound of the ratio below 1 + catch,
where `catch` is the slowdown the gate must not miss (by default 3 x the threshold: 6 % at 0.02,
so that a 5 % slowdown is rarely stopped as one of "at most 6 %"): whatever is left is smaller
than what the gate promises to find.

Error control: a confirmation tests one of `family` cells (the cells the night confirms, fixed
before any is measured); each of its looks tests at alpha x share / family, the look's share of
the cell's alpha (`alpha_shares`: weighted Bonferroni over looks, Bonferroni over cells), so the
night's chance of confirming a regression that is not there is at most alpha whatever the
stopping. The alpha goes where it can be used: six pairs cannot reach a small p (six positive
pairs give 1/64), so the first look spends none and only stops steady cells early, while the
last, where a slowed cell on a busy device ends up, spends half. The cell's p-value, the least
over its looks of p / share, is what Holm adjusts across the night. A futility stop never
changes that (it only ever stops a cell from being called slower); each spends beta / looks, so
together they cost at most 1 - power of a slowdown of `catch` or more, and a cell with a sign of
a slowdown is measured on rather than stopped."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from harness.noise import INTERFERENCE, interfered

LOOKS = (6, 12, 24, 48, 96)  # pairs at which the test looks by default; the last is the most a cell gets
FUTILITY_P = 0.2  # a cell with this much sign of a slowdown is measured on, whatever its upper bound


@lru_cache(maxsize=128)
def signed_rank_cdf(n: int) -> np.ndarray:
    """P(T+ <= t) for t = 0 .. n(n+1)/2 under no change: the exact distribution of Wilcoxon's
    signed-rank statistic, each rank's sign a fair coin."""
    dist = np.zeros(n * (n + 1) // 2 + 1)
    dist[0] = 1.0
    for k in range(1, n + 1):
        shifted = np.zeros_like(dist)
        shifted[k:] = dist[:-k]
        dist = 0.5 * (dist + shifted)
    return np.cumsum(dist)


def _order_index(n: int, tail: float) -> int:
    """The largest c with P(T+ <= c) <= tail; -1 when not even the extreme reaches it."""
    return int(np.searchsorted(signed_rank_cdf(n), tail, side="right")) - 1


@dataclass(frozen=True)
class Look:
    pairs: int  # measured so far
    kept: int  # without an interfered launch
    ratio: float  # exp(Hodges-Lehmann of d): candidate / baseline, measured now
    p_slower: float  # exact one-sided signed-rank p at this look (not adjusted)
    p_faster: float
    upper: float  # (1 - beta / looks) upper bound of the ratio
    low: float  # (1 - alpha) interval of the ratio, for display
    high: float
    decision: str | None  # regression | improvement | unchanged | None (look again)
    why: str


def kept_pairs(a: np.ndarray, b: np.ndarray, interference: float = INTERFERENCE) -> np.ndarray:
    """d = log(B) - log(A) of the pairs whose launches interference did not slow. `a`, `b`: the
    arms' launch centers, pair by pair; each arm is judged against its own 10th percentile."""
    la, lb = np.log(np.asarray(a, dtype=np.float64)), np.log(np.asarray(b, dtype=np.float64))
    keep = ~(interfered(la, interference) | interfered(lb, interference))
    return (lb - la)[keep]


class PairedSequential:
    """The sequential paired test of one cell; `family` is the number of cells the night confirms."""

    def __init__(self, threshold: float, alpha: float, catch: float, power: float = 0.95, family: int = 1,
                 interference: float = INTERFERENCE, max_pairs: int = LOOKS[-1]):
        self.threshold, self.alpha, self.catch, self.power = threshold, alpha, catch, power
        self.family, self.interference = max(1, family), interference
        self.plan = plan_looks(max_pairs)
        self.shares = alpha_shares(len(self.plan))
        self.looks = len(self.plan)
        self.beta_look = (1.0 - power) / self.looks

    def share(self, pairs: int) -> float:
        """The share of a cell's alpha spent at the look taken at `pairs` pairs (a look between two
        planned ones counts as the next)."""
        return self.shares[next((k for k, n in enumerate(self.plan) if n >= pairs), self.looks - 1)]

    def next_look(self, pairs: int) -> int | None:
        """The pair count of the next look after `pairs`, or None after the last."""
        return next((n for n in self.plan if n > pairs), None)

    def alpha_look(self, pairs: int) -> float:
        """The level of the look at `pairs` pairs: its share of the cell's alpha over the family."""
        return self.alpha * self.share(pairs) / self.family

    def look(self, a: np.ndarray, b: np.ndarray) -> Look:
        """The test on the pairs so far: `a`, `b` the baseline's and the candidate's launch centers."""
        d = kept_pairs(a, b, self.interference)
        n, pairs = d.size, len(a)
        if n == 0:
            return Look(pairs, 0, 1.0, 1.0, 1.0, math.inf, 0.0, math.inf, None, "no pair free of interference yet")
        walsh = np.sort((d[:, None] + d[None, :])[np.triu_indices(n)] / 2.0)
        ratio = math.exp(float(np.median(walsh)))
        nonzero = d[d != 0.0]
        ranks = _ranks(np.abs(nonzero))
        t_plus = float(ranks[nonzero > 0].sum())
        m = nonzero.size
        cdf = signed_rank_cdf(m)
        total = m * (m + 1) / 2.0
        # P(T+ >= t) and P(T+ <= t): ties give half ranks, so round to the grid conservatively
        p_slower = float(1.0 - cdf[int(math.ceil(t_plus)) - 1]) if t_plus >= 1 else 1.0
        p_faster = float(cdf[min(int(math.floor(t_plus)), int(total))])
        c_beta, c_alpha = _order_index(n, self.beta_look), _order_index(n, self.alpha / 2.0)
        upper = math.exp(walsh[walsh.size - 1 - c_beta]) if c_beta >= 0 else math.inf
        low = math.exp(walsh[c_alpha]) if c_alpha >= 0 else 0.0
        high = math.exp(walsh[walsh.size - 1 - c_alpha]) if c_alpha >= 0 else math.inf
        decision, why = None, ""
        level = self.alpha_look(pairs)
        if p_slower <= level and ratio > 1.0 + self.threshold:
            decision, why = "regression", (f"slower at p {p_slower:.2g} <= {level:.2g} (alpha {self.alpha:g} over "
                                           f"{self.family} cell(s), {self.share(pairs):.0%} of it at this look)")
        elif p_faster <= level and ratio < 1.0 - self.threshold:
            decision, why = "improvement", f"faster at p {p_faster:.2g} <= {level:.2g}"
        elif upper < 1.0 + self.catch and p_slower > FUTILITY_P:
            decision, why = "unchanged", (f"no slowdown of {self.catch:.0%} or more (the upper bound of the ratio "
                                          f"is {upper:.3f}) and no sign of a smaller one (p {p_slower:.2g})")
        return Look(pairs, n, ratio, p_slower, p_faster, upper, low, high, decision, why)

    def p_value(self, looks: list[Look]) -> float:
        """The cell's one-sided p-value for `slower` over every look it took (weighted Bonferroni over
        the planned looks: p / share at each), for Holm across the night's confirmations."""
        spent = [x.p_slower / self.share(x.pairs) for x in looks if self.share(x.pairs) > 0]
        return min(1.0, min(spent)) if spent else 1.0

    def detectable(self, look: Look) -> float:
        """About the smallest slowdown this many kept pairs would confirm with probability `power`:
        the interval's spread as a normal standard error, at the look's level."""
        from scipy.stats import norm

        if not (math.isfinite(look.high) and look.low > 0):
            return math.inf
        se = math.log(look.high / look.low) / (2.0 * norm.ppf(1.0 - self.alpha / 2.0))
        shift = (norm.ppf(1.0 - self.alpha_look(look.pairs)) + norm.ppf(self.power)) * se
        return max(math.expm1(shift), (1.0 + self.threshold) * math.exp(norm.ppf(self.power) * se) - 1.0)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of x, ties sharing their mean rank."""
    from scipy.stats import rankdata

    return rankdata(x)


def plan_looks(max_pairs: int) -> tuple[int, ...]:
    """The pair counts the test looks at: 6, doubling up to `max_pairs` (which must be 6 x 2^k, at
    least 24)."""
    if max_pairs < 24 or max_pairs % 6 or (max_pairs // 6) & (max_pairs // 6 - 1):
        raise ValueError(f"the most pairs a cell gets must be 6 x 2^k and at least 24 (24, 48, 96, 192, ...), "
                         f"not {max_pairs}")
    looks = [LOOKS[0]]
    while looks[-1] < max_pairs:
        looks.append(2 * looks[-1])
    return tuple(looks)


def alpha_shares(looks: int) -> tuple[float, ...]:
    """Each look's share of a cell's alpha: the last half, the one before it a quarter, and so on
    back to the second look, which takes what is left; the first (6 pairs) none."""
    shares = [0.0] + [0.5 ** (looks - k) for k in range(1, looks)]
    shares[1] += 1.0 - sum(shares)
    return tuple(shares)
