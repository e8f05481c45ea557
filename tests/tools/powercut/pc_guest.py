"""Guest-level side of powercut: the stamped data of guest writes, workload scripts, and
the data oracle that says what each guest sector may read after a power cut."""
import bisect
import struct

from pc_model import WRITE, SYNC_END, SYNC_ALL, SYNC_FSYNC, SYNC_FDATASYNC

SECTOR = 512
KIB = 1024

# ---------------------------------------------------------------------------------------
# Guest data: every 512-byte guest sector a write touches gets a 16-byte stamp ("PCw1",
# op number u32, sector number u64, little-endian) and a filler: pseudo-random
# (splitmix64) for write, text for wcomp (so that it compresses). tests/tools/blkio.c
# (sector_data) produces the same bytes.

MAGIC = b'PCw1'
M64 = (1 << 64) - 1
TEXT = b'power cut test: compressible filler text. '
_sector_cache = {}


def sector_data(seed, op, sector, text):
    k = (seed, op, sector, text)
    d = _sector_cache.get(k)
    if d is not None:
        return d
    head = MAGIC + struct.pack('<IQ', op, sector)
    if text:
        tl = len(TEXT)
        body = bytes(TEXT[(i + op + sector) % tl] for i in range(16, 512))
    else:
        x = (seed ^ ((op * 0xD1B54A32D192ED03) & M64) ^ ((sector * 0x8CB92BA72F3D8DD7) & M64)) & M64
        words = []
        for _ in range(62):
            x = (x + 0x9E3779B97F4A7C15) & M64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            words.append(z ^ (z >> 31))
        body = struct.pack('<62Q', *words)
    d = head + body
    if len(_sector_cache) > 200000:
        _sector_cache.clear()
    _sector_cache[k] = d
    return d


def op_data(seed, op, off, length, text):
    out = bytearray()
    p, end = off, off + length
    while p < end:
        s, i = divmod(p, SECTOR)
        n = min(SECTOR - i, end - p)
        out += sector_data(seed, op, s, text)[i:i + n]
        p += n
    return bytes(out)


# ---------------------------------------------------------------------------------------
# Workload scripts: "seed N", "depth N", then one op a line: write OFF LEN, zero OFF LEN,
# discard OFF LEN, wcomp OFF LEN (one compressed cluster), flush. Ops are numbered from 0.

class Op:
    __slots__ = ('idx', 'kind', 'off', 'len')

    def __init__(self, idx, kind, off=0, length=0):
        self.idx, self.kind, self.off, self.len = idx, kind, off, length

    def line(self):
        return 'flush' if self.kind == 'flush' else '%s %d %d' % (self.kind, self.off, self.len)

    def sectors(self):
        if self.kind == 'flush' or self.len == 0:
            return range(0)
        return range(self.off // SECTOR, (self.off + self.len - 1) // SECTOR + 1)


def format_script(seed, depth, ops):
    return ''.join(['seed %d\n' % seed, 'depth %d\n' % depth] + [o.line() + '\n' for o in ops])


def parse_script(text):
    seed, depth, ops = 0, 1, []
    for ln in text.splitlines():
        ln = ln.split('#')[0].split()
        if not ln:
            continue
        if ln[0] == 'seed':
            seed = int(ln[1])
        elif ln[0] == 'depth':
            depth = int(ln[1])
        elif ln[0] == 'flush':
            ops.append(Op(len(ops), 'flush'))
        elif ln[0] in ('write', 'zero', 'discard', 'wcomp') and len(ln) == 3:
            ops.append(Op(len(ops), ln[0], int(ln[1]), int(ln[2])))
        else:
            raise ValueError('bad script line: %r' % ' '.join(ln))
    return seed, depth, ops


# ---------------------------------------------------------------------------------------
# The data oracle

ANY = frozenset(['*'])  # a sector whose content is unspecified


class Oracle:
    """What each guest sector may read after a power cut.

    Epochs: epoch j (j >= 1) starts when the j-th guest flush has completed; epoch 0 is
    before any. In epoch j, a sector must read as the ops before the j-th flush left it
    (the mandatory ops, applied in order to the initial content) with any subset of the
    ops after that flush applied on top, in op order (ops in flight together are sector
    disjoint, so their order does not matter). A discard may leave a range unchanged,
    zeroed or reading the backing file. Ops not yet issued at the cut are allowed too:
    their stamped data cannot be on the disk before they are issued, so allowing them
    costs nothing, and zeroes/discards carry no stamp to tell.

    Discards: a flushed discard may leave a range unchanged, zeroed or reading the
    backing file. A discard not yet flushed leaves its sectors unspecified (qemu's
    contract: the guest gave the data up; a freed cluster may already hold another
    guest write while the old mapping to it is not yet cleared on the disk), so such
    sectors are not checked until a later flushed write covers them again.

    When is a guest flush complete? The log only shows host writes, so each op is found
    by its stamps: a host write (to the image) that contains the stamp of op i proves op i
    was issued by then. The j-th flush (op f) is issued after every earlier op completed
    (at depth N too: the executor waits for them) and completes before any later op
    starts. So with E = the first host write holding a stamp of an op after f, and L = the
    last host write holding a stamp of an op before f, the flush completed at the last
    successful fsync/fdatasync END of the image between L and E (this rule is the same for
    the vtool and the qemu-io executors: both issue one op after another around a flush).
    If no such END exists the flush synced nothing; it still returned before E, so it is
    taken as complete at E (and its data loss will show). With no later stamped op, the
    last END after L in the whole log (the close's flush) or else the end of the log."""

    def __init__(self, seed, ops, initial, backing=None, max_cands=256):
        self.seed, self.ops, self.initial, self.backing = seed, ops, initial, backing
        self.max_cands = max_cands
        self.flushes = [o.idx for o in ops if o.kind == 'flush']
        self.touch = {}
        for o in ops:
            for s in o.sectors():
                self.touch.setdefault(s, []).append(o.idx)
        self.touched = sorted(self.touch)
        self._cands = {}
        self.completion = []

    def locate(self, model, key):
        """Find the completion event of each guest flush in a run's log."""
        first, last = {}, {}
        nops = len(self.ops)
        for e in model.evs:
            if e.type != WRITE or e.key != key:
                continue
            d, pos = e.data, e.data.find(MAGIC)
            while pos >= 0 and pos + 16 <= len(d):
                op, sec = struct.unpack_from('<IQ', d, pos + 4)
                if op < nops and self.ops[op].kind in ('write', 'wcomp') and sec in self.ops[op].sectors():
                    first.setdefault(op, e.idx)
                    last[op] = e.idx
                pos = d.find(MAGIC, pos + 1)
        ends = [e.idx for e in model.evs if e.type == SYNC_END and
                (e.c == SYNC_ALL or (e.key == key and e.c in (SYNC_FSYNC, SYNC_FDATASYNC)))]
        self.completion, prev = [], -1
        for f in self.flushes:
            E = min((first[o] for o in first if o > f), default=None)
            L = max((last[o] for o in last if o < f), default=-1)
            hi = E if E is not None else len(model.evs)
            k = bisect.bisect_left(ends, hi) - 1
            if k >= 0 and ends[k] > L:
                comp = ends[k]
            elif E is not None:
                comp = E
            else:
                comp = len(model.evs) - 1
            prev = max(prev, comp)
            self.completion.append(prev)

    def epoch(self, c):
        """Guest flushes completed before cut c."""
        return bisect.bisect_left(self.completion, c)

    def _apply(self, op, v, s):
        """The contents sector s may have after op is applied to content v."""
        lo, hi = max(op.off, s * SECTOR), min(op.off + op.len, (s + 1) * SECTOR)
        a, b = lo - s * SECTOR, hi - s * SECTOR
        if op.kind in ('write', 'wcomp'):
            d = sector_data(self.seed, op.idx, s, op.kind == 'wcomp')
            return [v[:a] + d[a:b] + v[b:]]
        z = v[:a] + bytes(b - a) + v[b:]
        if op.kind == 'zero':
            return [z]
        out = [v, z]  # discard
        if self.backing is not None:
            bk = self.backing[s * SECTOR:(s + 1) * SECTOR].ljust(SECTOR, b'\0')
            out.append(v[:a] + bk[a:b] + v[b:])
        return out

    def cands(self, j, s):
        """The set of contents sector s may hold in epoch j; ANY if unspecified; None if
        there are too many to list."""
        k = (j, s)
        if k in self._cands:
            return self._cands[k]
        bound = self.flushes[j - 1] if j else -1
        vs = {self.initial[s * SECTOR:(s + 1) * SECTOR]}
        for i in self.touch[s]:
            op = self.ops[i]
            mandatory = i < bound
            if vs is ANY:
                full = op.off <= s * SECTOR and op.off + op.len >= (s + 1) * SECTOR
                if mandatory and full and op.kind != 'discard':
                    vs = set(self._apply(op, bytes(SECTOR), s))
                continue
            if op.kind == 'discard' and not mandatory:
                vs = ANY
                continue
            new = set()
            for v in vs:
                new.update(self._apply(op, v, s))
            vs = new if mandatory else vs | new
            if len(vs) > self.max_cands:
                vs = None
                break
        self._cands[k] = vs
        return vs

    def check(self, raw, j, limit=8):
        """Mismatching sectors of a guest image read as raw bytes in epoch j:
        [(sector, found, [expected...])]; a None expectation list = unchecked."""
        bad = []
        if len(raw) != len(self.initial):
            return [(-1, 'size %d' % len(raw), ['size %d' % len(self.initial)])]
        chunk = 64 * KIB
        tset = self.touch
        for off in range(0, len(raw), chunk):
            if raw[off:off + chunk] == self.initial[off:off + chunk]:
                continue
            for s in range(off // SECTOR, (off + chunk) // SECTOR):
                if s not in tset and raw[s * SECTOR:(s + 1) * SECTOR] != self.initial[s * SECTOR:(s + 1) * SECTOR]:
                    bad.append((s, raw[s * SECTOR:(s + 1) * SECTOR], [self.initial[s * SECTOR:(s + 1) * SECTOR]]))
                    if len(bad) >= limit:
                        return bad
        for s in self.touched:
            vs = self.cands(j, s)
            sec = raw[s * SECTOR:(s + 1) * SECTOR]
            if vs is not None and vs is not ANY and sec not in vs:
                bad.append((s, sec, sorted(vs)))
                if len(bad) >= limit:
                    break
        return bad

    def describe(self, sec, s=None):
        """A few words on what a sector (number s) holds."""
        if sec == bytes(len(sec)):
            return 'zeros'
        if s is not None and sec == self.initial[s * SECTOR:(s + 1) * SECTOR]:
            return 'its initial content (backing file or prefill)'
        parts = []
        pos = sec.find(MAGIC)
        while pos >= 0 and pos + 16 <= len(sec):
            op, s = struct.unpack_from('<IQ', sec, pos + 4)
            parts.append('stamp op %d sector %d at +%d' % (op, s, pos))
            pos = sec.find(MAGIC, pos + 1)
        return ', '.join(parts) if parts else 'other bytes (%s...)' % sec[:8].hex()
