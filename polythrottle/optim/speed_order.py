"""The knobs' speed order (``Knob.latency_trend``, ``latency_exponent``, ``speed_rank``) and what it
implies for constrained BO: dominated configs, bounds on P(feasible) of configs slower or faster than
measured ones, bounds on their latency, and ranks that measurements contradict.

``SpeedOrder`` is the partial order of a space's points; ``OrderBounds`` is mixed into ``ConstrainedBO``
(it uses ``self.space``, ``self.settings``, ``self.measured`` and ``self._point_estimates``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy.special import ndtr, owens_t

from polythrottle.optim.cbo_state import CBOState
from polythrottle.optim.estimates import PointEstimates
from polythrottle.space import SearchSpace

PROBE_MIN_P = 0.01
"""Least chance (feasible and cheaper than the recommendation) worth a probe of opened configs."""


def bvn_cdf(h: np.ndarray, k: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """P(X <= h, Y <= k) for standard normals X, Y with correlation ``rho`` (|rho| < 1), elementwise
    (Owen's T-function formula)."""
    h = np.where(np.abs(h) < 1e-12, 1e-12, h)
    k = np.where(np.abs(k) < 1e-12, 1e-12, k)
    r = np.clip(rho, -0.999999, 0.999999)
    q = np.sqrt(1.0 - r * r)
    beta = np.where(h * k > 0, 0.0, 0.5)
    return 0.5 * ndtr(h) + 0.5 * ndtr(k) - owens_t(h, (k / h - r) / q) - owens_t(k, (h / k - r) / q) - beta


class SpeedOrder:
    """The partial order of a space's points by speed, from the knobs' semantics.

    ``slower(c, m)``: point c is at least as slow as point m (no faster on any ordered knob, equal on
    the unordered ones). ``log_slowdown(c, m)``: an upper bound on log(latency(c) / latency(m)) from the
    knobs' latency exponents (inf where no bound is known).

    ``ranks``: speed ranks that replace a knob's own (space column -> rank per value), where measurements
    contradicted part of its order (values whose order was contradicted share a rank: no order between
    them, the rest of the order kept); ``unranked``: knobs with no rank order left at all.
    """

    def __init__(self, space: SearchSpace, unranked: frozenset[int] = frozenset(),
                 ranks: Mapping[int, tuple[int, ...]] | None = None) -> None:
        rows = space.rows
        self.unranked = unranked
        self.ranks = dict(ranks or {})
        trended, ranked, other, exps, logv = [], [], [], [], []
        for j, k in enumerate(space.knobs):
            if j in unranked:  # its speed order was contradicted by measurements
                other.append(j)
            elif k.numeric and k.latency_trend:
                trended.append(j)
                v = np.asarray(k.values, dtype=float)
                ok = k.latency_exponent is not None and v.min() > 0
                exps.append(k.latency_exponent if ok else math.inf)
                # larger = slower, in log units of the value (0 where no exponent applies)
                logv.append(k.latency_trend * (np.log(v) if ok else np.zeros(len(v)))[rows[:, j]])
            elif k.speed_rank is not None:
                ranked.append(j)
            else:
                other.append(j)
        self.active = bool(trended or ranked)
        trend = np.array([space.knobs[j].latency_trend for j in trended], dtype=np.int64)
        self.slow = rows[:, trended].astype(np.int64) * trend  # larger = slower (value index order)
        self.logv = np.stack(logv, axis=1) if logv else np.zeros((len(rows), 0))
        self.exps = np.asarray(exps, dtype=float)
        self.rank = (
            np.stack([np.asarray(self.ranks.get(j, space.knobs[j].speed_rank))[rows[:, j]] for j in ranked], axis=1)
            if ranked else np.zeros((len(rows), 0), dtype=np.int64)
        )
        self.rval = rows[:, ranked]
        self.other = rows[:, other]
        self.ranked_cols = ranked
        self.unordered_cols = [j for j in other if not space.knobs[j].numeric]
        """Categorical knobs with no known speed order (or a contradicted one): a GP cannot extrapolate
        to their unmeasured values."""
        self._unranked_key = rows[:, trended + other]

    def dominated(self) -> np.ndarray:
        """Per point: whether another point of the space has the same values of every knob without a
        speed rank and a rank at least as high on every ranked knob, higher on one (the same value
        where ranks tie). By the knobs' semantics it is then no slower and uses no more energy."""
        n = len(self.rval)
        if not self.ranked_cols:
            return np.zeros(n, dtype=bool)
        _, group = np.unique(self._unranked_key, axis=0, return_inverse=True)
        combos, combo = np.unique(self.rval, axis=0, return_inverse=True)
        group, combo = group.reshape(-1), combo.reshape(-1)
        rank = self.rank[np.unique(combo, return_index=True)[1]]  # rank of each combo
        ra, rb = rank[:, None, :], rank[None, :, :]
        eq = combos[:, None, :] == combos[None, :, :]
        geq = ((ra > rb) | eq).all(-1)
        strict = (ra > rb).any(-1)
        dom = geq & strict  # dom[a, b]: combo a dominates combo b
        exists = np.zeros((group.max() + 1, len(combos)), dtype=bool)
        exists[group, combo] = True
        return (exists[group] & dom[:, combo].T).any(-1)

    def contradicted(self, idx: np.ndarray, lobj: np.ndarray, lcon: np.ndarray, tol_obj: np.ndarray,
                     tol_con: np.ndarray) -> dict[int, set[tuple[int, int]]]:
        """The rank orders measured points contradict: a point at least as fast by the order (equal on
        every other knob) measured slower or costlier than another by more than the tolerances (log
        units, per point). Per ranked knob (space column): pairs (value ranked faster, value ranked
        slower), as value indices, on which two such points differ."""
        bad: dict[int, set[tuple[int, int]]] = {}
        for a, b in zip(*np.nonzero(self.wrong_pairs(idx, lobj, lcon, tol_obj, tol_con))):
            for c, x, y in zip(self.ranked_cols, self.rval[idx[a]], self.rval[idx[b]]):
                if x != y:
                    bad.setdefault(c, set()).add((int(x), int(y)))
        return bad

    def wrong_pairs(self, idx: np.ndarray, lobj: np.ndarray, lcon: np.ndarray, tol_obj: np.ndarray,
                    tol_con: np.ndarray) -> np.ndarray:
        """(len(idx), len(idx)) booleans: [a, b] where point a is at least as fast as b by the ranks (equal on
        every other knob) and measured slower or costlier by more than the tolerances (see ``contradicted``)."""
        if not self.ranked_cols or len(idx) < 2:
            return np.zeros((len(idx), len(idx)), dtype=bool)
        key = self._unranked_key[idx]
        same = (key[:, None, :] == key[None]).all(-1)
        ra, rb = self.rank[idx][:, None, :], self.rank[idx][None]
        va, vb = self.rval[idx][:, None, :], self.rval[idx][None]
        geq = ((ra > rb) | (va == vb)).all(-1) & (ra > rb).any(-1) & same  # a dominates b
        tc = np.hypot(tol_con[:, None], tol_con[None])
        to = np.hypot(tol_obj[:, None], tol_obj[None])
        return geq & ((lcon[:, None] > lcon[None] + tc) | (lobj[:, None] > lobj[None] + to))

    def knob_ranks(self, space: SearchSpace, col: int) -> np.ndarray:
        """The speed rank of each value of the knob in column ``col`` as used now (its own, or what is
        left of it after contradictions)."""
        return np.asarray(self.ranks.get(col, space.knobs[col].speed_rank))

    def _ranked_cmp(self, c: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For candidates c and measured m (row indices), each (len(c), len(m)): whether they share the
        unordered values, and whether c is at least as fast / at least as slow as m on the ranked knobs."""
        same = (self.other[c][:, None, :] == self.other[m][None]).all(-1)
        rc, rm = self.rank[c][:, None, :], self.rank[m][None]
        eq = self.rval[c][:, None, :] == self.rval[m][None]
        return same, ((rc > rm) | eq).all(-1), ((rc < rm) | eq).all(-1)

    def relations(self, c: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(c at least as slow as m, c at least as fast as m), each (len(c), len(m))."""
        same, fast_r, slow_r = self._ranked_cmp(c, m)
        slow_t = (self.slow[c][:, None, :] >= self.slow[m][None]).all(-1)
        fast_t = (self.slow[c][:, None, :] <= self.slow[m][None]).all(-1)
        return same & slow_t & slow_r, same & fast_t & fast_r

    def log_slowdown(self, c: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Upper bounds on log(latency(c) / latency(m)), each (len(c), len(m)): the bound (inf where
        none is known), and the part of it the knobs with a latency exponent account for (the knobs
        without a known bound on their effect left out)."""
        same, no_slower_r, _ = self._ranked_cmp(c, m)
        slower_t = self.slow[c][:, None, :] > self.slow[m][None]
        bounded = np.isfinite(self.exps)
        d = np.maximum(self.logv[c][:, None, :] - self.logv[m][None], 0.0)
        f = (d[..., bounded] * self.exps[bounded]).sum(-1)
        unbounded = slower_t[..., ~bounded].any(-1)
        return np.where(same & no_slower_r & ~unbounded, f, math.inf), f


class OrderBounds(CBOState):
    """Bounds from the speed order of the measured points (see the module docstring)."""

    def _set_order(self, unranked: frozenset[int], ranks: Mapping[int, tuple[int, ...]] | None = None) -> None:
        """Use the knobs' speed order, without the ranks of ``unranked`` knobs and with ``ranks`` in place
        of the others' own where measurements contradicted part of their order (see ``SpeedOrder``)."""
        self.order = SpeedOrder(self.space, unranked, ranks)
        self._use_order = self.settings.monotone_slack is not None and self.order.active
        self.undominated = ~self.order.dominated() if self.settings.prune_dominated else np.ones(len(self.space), bool)
        """Points not dominated by the knobs' speed ranks (``SpeedOrder.dominated``): the only ones explored."""

    def _check_order(self) -> bool:
        """Drop the rank orders that measurements contradict (``contradiction_tol``); True
        if any. Only what is contradicted goes: values ranked b < a, with a measured no faster than b,
        share b's rank from then on, together with every value ranked between them; the order to the
        other values stays (TF32 measured faster than fp16 says nothing against fp32 being slower than
        both). A knob whose values all end up sharing one rank has no order left."""
        if not self.settings.prune_dominated or not self.order.ranked_cols or len(self.measured) < 2:
            return False
        est = self._point_estimates()
        tol_obj, tol_con = self._contradiction_tol(est)
        bad = self.order.contradicted(np.asarray(est.idx), est.lobj, est.lcon, tol_obj, tol_con)
        if not bad:
            return False
        ranks, unranked = dict(self.order.ranks), set(self.order.unranked)
        for col, pairs in bad.items():
            rank = self.order.knob_ranks(self.space, col).copy()
            for faster, slower in pairs:
                lo, hi = sorted((int(rank[slower]), int(rank[faster])))
                rank[(rank >= lo) & (rank <= hi)] = lo
            ranks[col] = tuple(int(r) for r in rank)
            if len(set(ranks[col])) == 1:
                unranked.add(col)
        pruned = ~self.undominated
        self._set_order(frozenset(unranked), ranks)
        opened = np.flatnonzero(pruned & self.undominated)
        if len(opened):
            self._opened = opened if self._opened is None else np.union1d(self._opened, opened)
        return True

    def _contradiction_tol(self, est: PointEstimates) -> tuple[np.ndarray, np.ndarray]:
        """Per measured point, the tolerances (log objective, log constraint) of ``contradiction_tol``: the
        relative slack (``_contradiction_slack``) plus its number of standard errors."""
        sd_obj = 0.0 if self.exact else self.noise_std()[0]
        k = self.settings.contradiction_tol[1]
        slack = self._contradiction_slack()
        return slack + k * sd_obj / np.sqrt(est.n), slack + k * est.se

    def _contradiction_slack(self) -> float:
        """The relative part of a point's ``contradiction_tol`` (log units; two points' combine to log(rel))."""
        return math.log(self.settings.contradiction_tol[0]) / math.sqrt(2)

    def suspect_recheck(self, est: PointEstimates) -> int | None:
        """Before the tune ends itself: a measured config that may contradict a rank, measured again once so
        that the test of ``_check_order`` decides on more than one measurement of it. A pair is suspect where
        the config ranked faster measured slower or costlier than the other beyond the relative slack of
        ``contradiction_tol`` but within its noise part; the one of the two measured fewer times (the faster-
        ranked on a tie) is re-measured, if it was measured under the threshold and has fewer than
        ``max_repeats`` measurements, once per config and tune. None when there is none.

        Live on an H200, EfficientNet-B0 at batch 4 measured 1.158 ms in TF32 once against 1.268 and 1.276 ms
        in fp16 (the table measured minutes before: 13% apart), inside the tolerance of one measurement; the
        precision rank stayed and batch 8 in TF32, the best config under a 1.5 ms SLO, was never measured."""
        if not self.settings.suspect_recheck or self.exact or not self.settings.prune_dominated:
            return None
        idx = np.asarray(est.idx)
        slack = np.full(len(idx), self._contradiction_slack())
        tol_obj, tol_con = self._contradiction_tol(est)
        suspect = (self.order.wrong_pairs(idx, est.lobj, est.lcon, slack, slack)
                   & ~self.order.wrong_pairs(idx, est.lobj, est.lcon, tol_obj, tol_con))
        picks = []
        for a, b in zip(*np.nonzero(suspect)):
            j = a if est.n[a] <= est.n[b] else b
            if int(idx[j]) not in self._suspects and est.lcon[j] <= 0.0 and est.n[j] < self.settings.max_repeats:
                picks.append((float(est.n[j]), int(idx[j])))
        if not picks:
            return None
        i = min(picks)[1]  # the fewest measurements, then the lowest index
        self._suspects.add(i)
        return i

    def _opened_probe(self, left: np.ndarray, p_better: np.ndarray) -> int | None:
        """When the tune would first end itself after a contradicted rank (``_check_order``) opened configs
        it had pruned: the opened config of ``left`` (unmeasured candidates) most likely to be feasible and
        cheaper than the recommendation (``p_better``, 0 where not provably under ``bound_factor`` x
        threshold: the GP's safety view is what was just contradicted), once per contradiction; None when
        none is pending or none has a chance of ``PROBE_MIN_P``.

        The GP has little data in the opened region and extrapolates there from configs ranked otherwise:
        on an H200, EfficientNet-B0 at batch 4 ran 16% faster in TF32 than in fp16, and batch 8 meets a
        1.5 ms SLO in TF32 only, but the GP, scaling TF32 by fp16's batch trend, put it over and the tune
        converged without measuring it."""
        if not self.settings.probe_opened or self._opened is None:
            return None
        score = np.where(np.isin(left, self._opened), p_better, 0.0)
        self._opened = None  # one probe per contradiction
        best = int(np.argmax(score))
        return int(left[best]) if score[best] >= PROBE_MIN_P else None

    def verdict_check(self, est: PointEstimates) -> int | None:
        """Before a verdict that rests on the knobs' speed order and the GP (no config can meet the
        threshold), a config that checks what they assume, or None when nothing is left to check:

        * a ranked knob not checked yet: the fastest measured config one rank lower on it, the same on
          every other knob. Ranks hold for most models and batch sizes, not all (on an H100, ResNet-50
          at batch 1 with CUDA graphs runs faster in TF32 than in fp16); a config they rule out as
          slower is otherwise never measured, and the verdict would name a fastest config that is not.
          One check per ranked knob and tune, on the knobs whose one-rank slowdown is bounded
          (``Knob.rank_step_slowdown``: precision): CUDA graphs off ran up to 17x slower than on, and never
          more than 1% faster, in the six measured tables with that knob; its check was a measurement at
          ~7x the threshold.
        * a value never measured of a categorical knob without a known speed order (an LLM's
          ``kv_cache``: dynamic, static, static_graphs): the fastest measured config with that value
          (else the unmeasured config with that value the GP predicts fastest). The GP has no data on
          such a value and puts it near the slowest measured config; on a 24-config LLM table that
          declared a 3 ms SLO impossible after two measurements, where static_graphs runs at 2.2 ms.
        """
        if not self.settings.prune_dominated:
            return None
        rows = self.space.rows
        fastest = rows[est.idx[int(np.argmin(est.lcon))]]
        i = self._one_rank_lower(fastest, math.inf)
        if i is not None:
            return i
        measured = rows[np.asarray(est.idx)]
        for col in self.order.unordered_cols:
            for value in range(len(self.space.knobs[col].values)):
                if (measured[:, col] == value).any():
                    continue
                j = self.space.row_of([*fastest[:col], value, *fastest[col + 1 :]])
                if j is None or j in self.measured:
                    left = np.flatnonzero(rows[:, col] == value)
                    left = left[~np.isin(left, list(self.measured))]
                    if len(left) == 0:
                        continue
                    j = int(left[int(np.argmin(self.posterior(left)[0][:, 1]))])
                return j
        return None

    def rank_check(self) -> int | None:
        """Before the tune ends itself while a knob's speed ranks prune configs (``dominated``): the
        recommendation one rank lower on that knob, which ``_check_order`` then compares with it. Once per
        knob and tune, only where the knob bounds how much slower one rank can be
        (``Knob.rank_step_slowdown``) and that bound keeps the check under ``bound_factor`` x threshold.
        Ranks hold for most models, not all: EfficientNet-B0 on an H200 runs 15-20% faster in TF32 than in
        fp16, so batch 8 meets a 1.5 ms SLO in TF32 only (17% cheaper than the best fp16 config), and
        without a check a pruned config is never measured. None when there is nothing to check."""
        if not self.settings.prune_dominated or not self.settings.rank_check:
            return None
        rec = self.recommend()
        if rec.index is None or rec.constraint is None:
            return None
        return self._one_rank_lower(self.space.rows[rec.index], self.settings.bound_factor * self.threshold / rec.constraint)

    def _one_rank_lower(self, base: np.ndarray, max_step: float) -> int | None:
        """For the ranked knobs not checked yet (each marked checked here, once per tune), the first unmeasured
        config ``base`` (value indices) has with that knob one rank lower, among knobs whose one-rank slowdown
        (``Knob.rank_step_slowdown``) is known and at most ``max_step``; None when there is none."""
        for col in self.order.ranked_cols:
            if col in self._rank_checked:
                continue
            self._rank_checked.add(col)
            step = self.space.knobs[col].rank_step_slowdown
            if step is None or step > max_step:
                continue
            rank = self.order.knob_ranks(self.space, col)
            below = rank[rank < rank[base[col]]]
            for v in np.flatnonzero(rank == below.max()) if len(below) else []:
                i = self.space.row_of([*base[:col], int(v), *base[col + 1 :]])
                if i is not None and i not in self.measured:
                    return i
        return None

    def _measured_order_bounds(self, est: PointEstimates) -> tuple[np.ndarray, np.ndarray]:
        """Bounds on the P(feasible) of measured points from the other measured points and the speed
        order: for a point i at least as slow as a measured j, P(i feasible | L_i >= L_j / (1 + slack)),
        the two estimates' normal errors conditioned on the order (an upper bound: the smallest over j);
        for i at least as fast as j, P(i feasible | L_i <= L_j (1 + slack)) (a lower bound: the largest).
        Unlike clipping to j's own probability, a point measured often is not overruled by one noisy
        measurement of a neighbour."""
        m = np.asarray(est.idx)
        k = len(m)
        lower, upper = np.zeros(k), np.ones(k)
        if k < 2:
            return lower, upper
        slower, faster = self.order.relations(m, m)
        np.fill_diagonal(slower, False)
        np.fill_diagonal(faster, False)
        if not (slower.any() or faster.any()):
            return lower, upper
        s = math.log1p(self.settings.monotone_slack or 0.0)
        mu, sd = est.lcon, est.se
        sd_d = np.sqrt(sd[:, None] ** 2 + sd[None] ** 2)
        mu_d = mu[:, None] - mu[None]
        rho = np.broadcast_to((sd[:, None] / sd_d), sd_d.shape)
        a = np.broadcast_to((-mu / sd)[:, None], sd_d.shape)
        base = ndtr(-mu / sd)
        with np.errstate(divide="ignore", invalid="ignore"):
            b_up = (-s - mu_d) / sd_d  # i slower than j: D = L_i - L_j >= -s
            den_up = ndtr(-b_up)
            cond_up = (ndtr(a) - bvn_cdf(a, b_up, rho)) / den_up
            b_lo = (s - mu_d) / sd_d  # i faster than j: D <= s
            den_lo = ndtr(b_lo)
            cond_lo = bvn_cdf(a, b_lo, rho) / den_lo
        use_up = slower & (den_up > 1e-6)  # a pair the measurements flatly contradict says nothing
        use_lo = faster & (den_lo > 1e-6)
        upper = np.where(use_up, np.clip(cond_up, 0.0, 1.0), 1.0).min(1)
        lower = np.where(use_lo, np.clip(cond_lo, 0.0, 1.0), 0.0).max(1)
        return np.minimum(lower, np.maximum(base, upper)), upper

    def _trend_bounds(self, points: np.ndarray, est: PointEstimates | None = None,
                      margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds on P(feasible) of ``points`` implied by the measured points (``est``,
        default: the current estimates) and the knobs' speed order (see ``CBOSettings.monotone_slack``);
        with ``margin``, on P(log(constraint / threshold) <= -margin)."""
        idx, _, lcon, se, _, _ = est if est is not None else self._point_estimates()
        slack = math.log1p(self.settings.monotone_slack or 0.0)
        if self.settings.slack_as_sd:
            sd = np.sqrt(se**2 + slack**2)
            p_up = p_lo = ndtr((-margin - lcon) / sd)
        else:
            p_up, p_lo = ndtr((slack - margin - lcon) / se), ndtr((-slack - margin - lcon) / se)
        lower, upper = np.zeros(len(points)), np.ones(len(points))
        m = np.asarray(idx)
        for start in range(0, len(points), self.settings.max_batch):
            sl = slice(start, start + self.settings.max_batch)
            slower, faster = self.order.relations(np.asarray(points[sl]), m)
            upper[sl] = np.where(slower, p_up[None], 1.0).min(1)
            lower[sl] = np.where(faster, p_lo[None], 0.0).max(1)
        return lower, upper

    def latency_bound(self, points: np.ndarray, est: PointEstimates | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Upper bounds on log(constraint / threshold) of ``points`` from the measured points and the
        knobs' latency exponents: (the bound, inf where no measured point gives one; the step bound,
        from the points believed feasible (else the fastest measured one) with the effect of the knobs
        without a known bound left out, i.e. what the point's latency would be at most if those knobs
        did not matter)."""
        idx, _, lcon, se, p, _ = est if est is not None else self._point_estimates()
        anchor = lcon + se  # a measured point's latency, one standard error up
        step_from = p >= 0.5
        if not step_from.any():
            step_from = anchor <= anchor.min()
        out, step = np.full(len(points), math.inf), np.full(len(points), math.inf)
        m = np.asarray(idx)
        for start in range(0, len(points), self.settings.max_batch):
            sl = slice(start, start + self.settings.max_batch)
            full, partial = self.order.log_slowdown(np.asarray(points[sl]), m)
            out[sl] = (full + anchor[None]).min(1)
            step[sl] = (partial + anchor[None])[:, step_from].min(1)
        return out, step


__all__ = ["OrderBounds", "SpeedOrder", "bvn_cdf"]
