#!/usr/bin/env python3
"""cl_protocol: decode_cl's synchronisation protocol (src/cuda/megakernel_cl.cuh) as coroutines.

Every block of the grid is a generator that follows the kernel's order of counter waits and
arrivals, cluster barriers, DSMEM writes and reads, weight-copy issues and takes, the residual
buffers' zeroing, atomics and reads, the lm_head's last block, the embedding, stop tokens and
teacher-forced steps, and MQ_CUDA_CLRED's cluster sum of the down partials through px (the attention
half's exchange region, shared with it as in the kernel). A scheduler interleaves the blocks at random (one action per tick, copies
land at random later ticks) over many seeds and shapes, on a sequentially consistent model, with
values kept exact (integers modulo a prime) and compared with a sequential reference. It fails on a
deadlock, a read of a value from the wrong layer or step, a take that finds no copy or the wrong
one, a copy issued into a buffer whose copy is still in flight, or tokens that differ.

It checks the protocol as transcribed here, not the hardware's memory ordering (that rests on the
release / acquire pattern decode_df uses). `--fault NAME` injects a known bug; each must fail.
"""
import argparse
import random
import sys

MOD = (1 << 61) - 1
CS = 8  # blocks per cluster


def h(*a):
    """a deterministic mixing function of integers (the 'math' of a stage)"""
    v = 1469598103934665603
    for x in a:
        v = ((v ^ (x % MOD)) * 1099511628211 + 12345) % MOD
    return v


class Fail(Exception):
    pass


class Sim:
    def __init__(self, L, nkv, ncl, n, first, ids, stop, lmring, clgu, fault, rng, clred=False):
        self.L, self.nkv, self.ncl, self.n = L, nkv, ncl, n
        self.GB = ncl * CS
        self.first, self.ids, self.stop, self.lmring, self.clgu = first, ids, stop, lmring, clgu
        self.clred = clred  # MQ_CUDA_CLRED: the down partials summed in the cluster through px first
        self.fault, self.rng = fault, rng
        self.flg = [0] * (5 * L + 1)
        self.ra = [0] * L
        self.rm = [0] * L
        self.cache = {}  # (l, kv head, pos) -> value
        self.qg = {}  # (cluster, dst rank) -> {src rank: (step, l, value)}
        self.px = {}
        self.bar = {}  # cluster -> arrivals so far
        self.lm_cnt = 0
        self.best = {}
        self.ctl = [0, 0]
        self.tokens = []
        self.pending = []  # (block, buffer) copies in flight
        self.landed = {}  # (block, buffer) -> tag, or absent
        self.inflight = {}  # (block, buffer) -> tag

    # ---- the model's math: what each stage contributes (exact, order-independent sums)
    def emb(self, tok):
        return h(7, tok)

    def o_part(self, l, c, r, att):
        return h(11, l, c, r, att)

    def mlp_part(self, l, b, x, r):
        """block b's down partial for output slice r (rank r's eighth of the outputs)"""
        return h(13, l, b, x, r)

    def kv_row(self, l, c, x):
        return h(17, l, c, x)

    def token(self, x):
        return x % 1000

    # ---- copies (bulk copies completing an mbarrier)
    def issue(self, b, k, tag):
        if tag is None:
            return
        if (b, k) in self.inflight or (b, k) in self.landed:
            raise Fail(f"block {b}: copy {tag} issued into buffer {k} while {self.inflight.get((b, k)) or self.landed.get((b, k))} is there")
        self.inflight[(b, k)] = tag
        self.pending.append((b, k))

    def land_one(self):
        if not self.pending:
            return
        i = self.rng.randrange(len(self.pending))
        b, k = self.pending.pop(i)
        self.landed[(b, k)] = self.inflight.pop((b, k))

    def take(self, b, k):
        """generator: wait for buffer k's copy (no-op when none was issued); returns its tag"""
        if (b, k) not in self.inflight and (b, k) not in self.landed:
            return None
        while (b, k) not in self.landed:
            yield "copy"
        return self.landed.pop((b, k))

    # ---- counters and cluster barriers
    def wait(self, i, target):
        while self.flg[i] < target:
            yield "wait"

    def cl_sync(self, c, k):
        """generator: cluster c's barrier number k (every rank calls it once per k)"""
        self.bar[c] = self.bar.get(c, 0) + 1
        while self.bar[c] < k * CS:
            yield "bar"

    def allgather(self, table, b, cid, rank, k, step, l, value, what):
        """generator: rank writes value into every rank's table (DSMEM stores), cluster barrier k, then
        reads all ranks' entries, which must be this (step, layer)'s; returns the values"""
        for d in range(CS):
            table.setdefault((cid, d), {})[rank] = (step, l, value)
        yield "bcast"
        yield from self.cl_sync(cid, k)
        yield "read"  # (the reads follow the barrier, not with it)
        got = table[(cid, rank)]
        for r in range(CS):
            e = got.get(r)
            if not e or e[:2] != (step, l):
                raise Fail(f"block {b}: {what} of rank {r} are {e} at step {step} layer {l}")
        return [got[r][2] for r in range(CS)]

    # ---- one block
    def block(self, b):
        L, GB, nkv = self.L, self.GB, self.nkv
        cid, rank = b // CS, b % CS
        att = cid < nkv
        nbar = 0
        flt = self.fault

        def copy_a(l):
            return ("qkv", l) if att else ("gu", l)

        def copy_b(l):
            return ("o", l) if att else ("down", l)

        if b == 0:
            self.rm[L - 1] = self.emb(self.ids[0] if self.ids else self.first)
            self.flg[5 * L] += 1
        self.issue(b, 0, copy_a(0))
        self.issue(b, 1, copy_b(0))
        nbar += 1
        yield from self.cl_sync(cid, nbar)
        stopped = False
        for step in range(self.n):
            pos, ts = step, step + 1
            more = step + 1 < self.n
            need_lm = not self.ids or step == self.n - 1
            lmring = need_lm and self.lmring
            for l in range(L):
                ln = l + 1 if l + 1 < L else (0 if more else -1)
                if l == 0:
                    yield from self.wait(5 * L, ts)
                    yield "read ctl"
                    if self.ctl[0]:
                        stopped = True
                        break
                if att:
                    if l > 0 and flt != "no-att-wait":
                        yield from self.wait(5 * (l - 1) + 1, GB * ts)
                    if b == 0:
                        zl = (l - 1) % L if flt != "zero-wrong-ra" else l
                        self.ra[zl] = 0
                        yield "zero"
                    xin = self.rm[(l - 1) % L]
                    yield "norm"
                    tag = yield from self.take(b, 0)
                    if tag != ("qkv", l):
                        raise Fail(f"block {b} step {step} layer {l}: q|k|v take found {tag}")
                    gu = ("gu", l)
                    if self.clgu == 0:
                        self.issue(b, 0, gu)
                    nbar += 1
                    got = yield from self.allgather(self.qg, b, cid, rank, nbar, step, l, xin, "q|k|v rows")
                    xs = set(got)
                    if len(xs) != 1:
                        raise Fail(f"cluster {cid}: ranks read different layer inputs at step {step} layer {l}")
                    if rank == CS - 1:
                        self.cache[(l, cid, pos)] = self.kv_row(l, cid, xin)
                    yield "prep"
                    if self.clgu == 1:
                        self.issue(b, 0, gu)
                    p0, p1 = (pos + 1) * rank // CS, (pos + 1) * (rank + 1) // CS
                    s = 0
                    for p in range(p0, p1):
                        if (l, cid, p) not in self.cache:
                            raise Fail(f"block {b}: K/V row {p} of layer {l} head {cid} not written at step {step}")
                        s = (s + self.cache[(l, cid, p)] * (p + 1)) % MOD
                    yield "attend"
                    nbar += 1
                    got = yield from self.allgather(self.px, b, cid, rank, nbar, step, l, s, "partials")
                    a = sum(got) % MOD
                    yield "combine"
                    tag = yield from self.take(b, 1)
                    if tag != ("o", l):
                        raise Fail(f"block {b} step {step} layer {l}: o take found {tag}")
                    self.issue(b, 1, ("down", l))
                    if self.clgu >= 2:
                        self.issue(b, 0, gu)
                    # (cluster 0's ranks each add their own rows of x: all of x once, here rank 0)
                    add = self.o_part(l, cid, rank, a) + (xin if cid == 0 and rank == 0 else 0)
                    self.ra[l] = (self.ra[l] + add) % MOD
                    yield "atomics"
                    self.flg[5 * l] += 1
                    yield "arrive"
                # MLP half
                if flt != "no-mlp-wait":
                    yield from self.wait(5 * l, nkv * CS * ts)
                if b == GB - 1:
                    self.rm[(l - 1) % L if flt != "zero-wrong-rm" else l] = 0
                    yield "zero"
                x = self.ra[l]
                yield "norm"
                tag = yield from self.take(b, 0)
                if tag != ("gu", l):
                    raise Fail(f"block {b} step {step} layer {l}: gate|up take found {tag}")
                if ln >= 0:
                    self.issue(b, 0, copy_a(ln))
                    if flt == "double-issue":
                        self.issue(b, 0, copy_a(ln))
                tag = yield from self.take(b, 1)
                if tag != ("down", l):
                    raise Fail(f"block {b} step {step} layer {l}: down take found {tag}")
                if not self.clred:
                    add = sum(self.mlp_part(l, b, x, r) for r in range(CS)) + (x if b == 0 else 0)
                    self.rm[l] = (self.rm[l] + add) % MOD
                else:
                    # each slice to its owner's px (DSMEM), a cluster barrier, the owner adds the 8 (block
                    # 0's partial carries the residual, here all of it in slice 0)
                    for d in range(CS):
                        v = self.mlp_part(l, b, x, d) + (x if b == 0 and d == 0 else 0)
                        self.px.setdefault((cid, d), {})[rank] = ("m", step, l, v)
                    yield "bcast"
                    if flt != "clred-no-bar":
                        nbar += 1
                        yield from self.cl_sync(cid, nbar)
                    yield "read"
                    got = self.px.get((cid, rank), {})
                    t = 0
                    for r in range(CS):
                        e = got.get(r)
                        if not e or e[:3] != ("m", step, l):
                            raise Fail(f"block {b}: down partial of rank {r} is {e} at step {step} layer {l}")
                        t += e[3]
                    self.rm[l] = (self.rm[l] + t) % MOD
                yield "atomics"
                self.flg[5 * l + 1] += 1
                yield "arrive"
                if ln >= 0 and not (lmring and l == L - 1 and flt != "ring-over-copy") and flt != "no-o-issue":
                    self.issue(b, 1, copy_b(ln))
            if stopped:
                break
            if need_lm:
                if lmring and ((b, 1) in self.inflight or (b, 1) in self.landed):
                    raise Fail(f"block {b}: the lm_head ring starts over buffer 1 with a copy in it")
                yield from self.wait(5 * (L - 1) + 1, GB * ts)
                x = self.rm[L - 1]
                yield "lm norm"
                self.best[b] = (step, x)
                self.lm_cnt += 1
                last = self.lm_cnt == GB
                yield "lm"
                if last:
                    xs = {v[1] for v in self.best.values() if v[0] == step}
                    if len(xs) != 1 or len([v for v in self.best.values() if v[0] == step]) != GB:
                        raise Fail(f"step {step}: the lm_head blocks read different final states")
                    tok = self.token(x)
                    st = (not self.ids) and tok in self.stop
                    self.tokens.append(tok)
                    self.lm_cnt = 0
                    self.ctl[1] = step + 1
                    if st:
                        self.ctl[0] = 1
                    if more and not st:
                        self.rm[L - 1] = self.emb(self.ids[step + 1] if self.ids else tok)
                    yield "embed"
                    if more and flt != "no-embed-arrive":
                        self.flg[5 * L] += 1
                if lmring and more:
                    self.issue(b, 1, copy_b(0))
            elif b == 0:
                yield from self.wait(5 * (L - 1) + 1, GB * ts)
                self.tokens.append(None)
                self.ctl[1] = step + 1
                self.rm[L - 1] = self.emb(self.ids[step + 1])
                yield "embed"
                self.flg[5 * L] += 1
        for k in (0, 1):
            yield from self.take(b, k)
        nbar += 1
        yield from self.cl_sync(cid, nbar)

    def run(self):
        gens = {b: self.block(b) for b in range(self.GB)}
        self.speed = {b: 10 ** self.rng.uniform(-1.5, 1.5) for b in range(self.GB)}
        ticks = 0
        while gens:
            ticks += 1
            if ticks > 5_000_000:
                raise Fail("too many ticks")
            if self.pending and self.rng.random() < 0.3:
                self.land_one()
                continue
            # blocks run at speeds that differ by up to ~1000x (a trial's random weights): slow
            # blocks make the rare orders (a late zeroing, a late reader) common
            order = list(gens)
            order.sort(key=lambda b: self.rng.random() ** (1.0 / self.speed[b]), reverse=True)
            progressed = False
            for b in order:
                # a block blocked on a wait makes no progress until the condition changes, but a
                # generator re-checks its condition each time it is resumed: resume and see
                try:
                    what = next(gens[b])
                except StopIteration:
                    del gens[b]
                    progressed = True
                    break
                if what not in ("wait", "bar", "copy"):
                    progressed = True
                    break
            if not progressed and not self.pending:
                stuck = sorted(gens)[:8]
                raise Fail(f"deadlock: blocks {stuck}... wait forever (counters {self.flg})")
        if self.pending or self.inflight or self.landed:
            raise Fail(f"copies left at exit: {self.inflight} {self.landed}")
        return self.tokens


def reference(L, nkv, ncl, n, first, ids, stop):
    """the same math, one step and one layer at a time"""
    GB = ncl * CS
    s = Sim(L, nkv, ncl, n, first, ids, stop, False, 0, None, random.Random(0))
    toks, cache = [], {}
    x = s.emb(ids[0] if ids else first)
    for step in range(n):
        pos = step
        for l in range(L):
            ra = x
            for c in range(nkv):
                cache[(l, c, pos)] = s.kv_row(l, c, x)
                for r in range(CS):
                    p0, p1 = (pos + 1) * r // CS, (pos + 1) * (r + 1) // CS
                    a = 0
                    for rr in range(CS):
                        q0, q1 = (pos + 1) * rr // CS, (pos + 1) * (rr + 1) // CS
                        a = (a + sum(cache[(l, c, p)] * (p + 1) for p in range(q0, q1))) % MOD
                    ra = (ra + s.o_part(l, c, r, a)) % MOD
            rm = ra
            for b in range(GB):
                rm = (rm + sum(s.mlp_part(l, b, ra, r) for r in range(CS))) % MOD
            x = rm
        need_lm = not ids or step == n - 1
        if need_lm:
            tok = s.token(x)
            toks.append(tok)
            if not ids and tok in stop:
                break
            if step + 1 < n:
                x = s.emb(ids[step + 1] if ids else tok)
        else:
            toks.append(None)
            x = s.emb(ids[step + 1])
    return toks


def trial(seed, fault=None):
    rng = random.Random(seed)
    L = rng.choice([2, 3, 4])
    nkv = rng.choice([1, 2, 3])
    ncl = nkv + rng.choice([0, 1, 2])
    n = rng.choice([1, 2, 3, 5])
    first = rng.randrange(1000)
    ids = [rng.randrange(1000) for _ in range(n)] if rng.random() < 0.25 else None
    lmring = rng.random() < 0.6
    clgu = rng.choice([0, 1, 2])
    clred = rng.random() < 0.5 or fault == "clred-no-bar"
    stop = set()
    if not ids and n > 1 and rng.random() < 0.5:  # a stop token at a random step
        ref = reference(L, nkv, ncl, n, first, None, set())
        stop = {ref[rng.randrange(n - 1)]}
    want = reference(L, nkv, ncl, n, first, ids, stop)
    got = Sim(L, nkv, ncl, n, first, ids, stop, lmring, clgu, fault, rng, clred).run()
    if got != want:
        raise Fail(f"tokens {got} != reference {want} (L {L}, kv heads {nkv}, clusters {ncl}, steps {n})")


FAULTS = ["zero-wrong-rm", "ring-over-copy", "zero-wrong-ra", "no-att-wait", "no-mlp-wait", "double-issue", "no-o-issue",
          "no-embed-arrive", "clred-no-bar"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--fault", choices=FAULTS)
    ap.add_argument("--faults", action="store_true", help="check that every injected fault fails")
    a = ap.parse_args()
    if a.faults:
        for f in FAULTS:
            caught = None
            for seed in range(200):
                try:
                    trial(seed, f)
                except Fail as e:
                    caught = str(e)
                    break
            if not caught:
                print(f"cl_protocol: fault {f} was NOT caught in 200 trials")
                return 1
            print(f"cl_protocol: fault {f} caught: {caught[:120]}")
        return 0
    for seed in range(a.trials):
        try:
            trial(seed, a.fault)
        except Fail as e:
            print(f"cl_protocol: trial {seed} FAILED: {e}")
            return 1
    print(f"cl_protocol: {a.trials} random interleavings and shapes: no deadlock, every read and take as expected, tokens equal to the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
