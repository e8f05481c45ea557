"""The crash-state model of powercut: the shim's log, and the files a power cut could
leave at each point of it.

The model (per file; a cut is a point in the log):
  * durable: the initial file, plus every event logged before the BEGIN of the last
    successful fsync/fdatasync of that file (any descriptor of the inode; syncfs/sync
    count for every file) whose END precedes the cut. sync_file_range is not a barrier.
    Writes through an O_DSYNC descriptor (or RWF_DSYNC) are durable once logged.
  * pending: the file's events logged after that BEGIN and before the cut (including
    the ones that completed while the sync ran). A crash state keeps any subset of them.
  * atomicity and ordering are per 4 KiB page: a page on the disk holds what the page
    cache held at some moment, so if a state keeps one pending write's part of a page, it
    keeps every earlier pending write's part of that page too (the chosen subset is closed
    downwards per page). A write is torn when only some of its pages are kept.
  * size: a write past EOF extends the file only as far as its kept pages reach.
    Truncates and fallocates (zero range, punch hole, extend) are metadata operations,
    journaled in order: a state keeps a prefix of the pending ones (so a pending truncate
    is both kept and not kept across states).
  * names: creates, renames and unlinks are durable once an fsync of their directory
    (or syncfs/sync) that began after them has ended; before that a state keeps a prefix
    of them, so a renamed target has either its old or its new content.

States enumerated per workload: at every flush boundary (durable only); and after every
logged write / size change / name change: everything pending kept (the process-kill
state, i.e. every prefix of the writes), seeded random subsets of the pending writes, and
seeded random subsets of their pages (torn). --max-states samples them; identical states
are judged once.
"""
import bisect
import json
import os
import random
import struct

# ---------------------------------------------------------------------------------------
# The shim's log

REC = struct.Struct('<IIQQIIII')
OPEN, WRITE, TRUNC, FALLOC, SYNC_BEGIN, SYNC_END, SYNC_FAIL, CLOSE, RENAME, UNLINK, \
    DIRSYNC_BEGIN, DIRSYNC_END = range(1, 13)
TYPE_NAMES = {OPEN: 'open', WRITE: 'write', TRUNC: 'truncate', FALLOC: 'fallocate',
              SYNC_BEGIN: 'sync-begin', SYNC_END: 'sync-end', SYNC_FAIL: 'sync-fail',
              CLOSE: 'close', RENAME: 'rename', UNLINK: 'unlink',
              DIRSYNC_BEGIN: 'dirsync-begin', DIRSYNC_END: 'dirsync-end'}
SYNC_FSYNC, SYNC_FDATASYNC, SYNC_RANGE, SYNC_ALL = range(4)
FL_KEEP_SIZE, FL_PUNCH_HOLE, FL_COLLAPSE, FL_ZERO_RANGE, FL_INSERT = 1, 2, 8, 0x10, 0x20
PAGE = 4096
SECTOR = 512


class Ev:
    __slots__ = ('idx', 'type', 'key', 'a', 'b', 'c', 'tid', 'pid', 'data', 'path', 'path2',
                 'created', 'sync')

    def __init__(self, idx, typ):
        self.idx, self.type = idx, typ
        self.key = self.data = self.path = self.path2 = None
        self.created = self.sync = False

    def describe(self):
        t = TYPE_NAMES.get(self.type, str(self.type))
        if self.type == WRITE:
            return '%s off=%d len=%d%s' % (t, self.a, len(self.data), ' dsync' if self.sync else '')
        if self.type == TRUNC:
            return '%s size=%d' % (t, self.a)
        if self.type == FALLOC:
            return '%s off=%d len=%d mode=%#x' % (t, self.a, self.b, self.c)
        if self.type in (SYNC_BEGIN, SYNC_END, SYNC_FAIL):
            return '%s kind=%s' % (t, ['fsync', 'fdatasync', 'sync_file_range', 'syncfs'][self.c])
        if self.type == RENAME:
            return '%s %s -> %s' % (t, self.path, self.path2)
        if self.type in (OPEN, UNLINK, DIRSYNC_BEGIN, DIRSYNC_END):
            return '%s %s%s' % (t, self.path, ' (created)' if self.created else '')
        return t


def parse_log(path):
    """The log as a list of Ev; files are keyed by (st_dev, st_ino)."""
    raw = open(path, 'rb').read()
    evs, fids, o = [], {}, 0
    while o < len(raw):
        if o + REC.size > len(raw):
            raise ValueError('%s: truncated record at %d' % (path, o))
        typ, fid, a, b, c, tid, ln, pid = REC.unpack_from(raw, o)
        o += REC.size
        payload = raw[o:o + ln]
        o += ln
        e = Ev(len(evs), typ)
        e.a, e.b, e.c, e.tid, e.pid = a, b, c, tid, pid
        if typ == OPEN:
            dev, ino = struct.unpack_from('<QQ', payload)
            e.key = (dev, ino)
            fids[(pid, fid)] = e.key
            e.path = payload[16:].decode('utf-8', 'surrogateescape')
            e.created = bool(b)
        elif typ == RENAME:
            old, new = payload.split(b'\0')[:2]
            e.path, e.path2 = old.decode('utf-8', 'surrogateescape'), new.decode('utf-8', 'surrogateescape')
            e.key = (a, b)
        elif typ == UNLINK:
            e.path = payload.decode('utf-8', 'surrogateescape')
            e.key = (a, b)
        elif typ in (DIRSYNC_BEGIN, DIRSYNC_END):
            e.path = payload.decode('utf-8', 'surrogateescape')
        elif fid:
            e.key = fids.get((pid, fid))
            if e.key is None:
                raise ValueError('%s: record %d names unknown file %d' % (path, e.idx, fid))
        if typ == WRITE:
            e.data = payload
            e.sync = bool(b & 1)
        evs.append(e)
    return evs


# ---------------------------------------------------------------------------------------
# The crash-state model

def _put(buf, off, data):
    if off > len(buf):
        buf.extend(bytes(off - len(buf)))
    buf[off:off + len(data)] = data


def _zero(buf, off, end):
    end = min(end, len(buf))
    if end > off:
        buf[off:end] = bytes(end - off)


def apply_event(buf, e, pages=None):
    """Apply one logged event to a file's bytes; pages: only these 4 KiB pages of a
    write (None = all of it)."""
    if e.type == WRITE:
        if pages is None:
            _put(buf, e.a, e.data)
            return
        for p in sorted(pages):
            lo, hi = max(e.a, p * PAGE), min(e.a + len(e.data), (p + 1) * PAGE)
            _put(buf, lo, e.data[lo - e.a:hi - e.a])
    elif e.type == TRUNC:
        if e.a < len(buf):
            del buf[e.a:]
        else:
            buf.extend(bytes(e.a - len(buf)))
    elif e.type == FALLOC:
        off, end, mode = e.a, e.a + e.b, e.c
        if mode & (FL_COLLAPSE | FL_INSERT):
            raise ValueError('fallocate mode %#x is not modelled' % mode)
        if mode & (FL_PUNCH_HOLE | FL_ZERO_RANGE):
            _zero(buf, off, end)
        if not mode & FL_KEEP_SIZE and end > len(buf):
            buf.extend(bytes(end - len(buf)))


def write_pages(e):
    return range(e.a // PAGE, (e.a + len(e.data) - 1) // PAGE + 1) if e.data else range(0)


class SyncIndex:
    """The durability barriers of one file (or directory): (begin, end) pairs. For a cut
    c, durable_begin(c) is the BEGIN of the last barrier whose END precedes c (-1: none);
    events logged before it are durable."""

    def __init__(self, pairs):
        pairs = sorted(pairs, key=lambda p: p[1])
        self.ends = [p[1] for p in pairs]
        self.maxbeg, m = [], -1
        for b, _ in pairs:
            m = max(m, b)
            self.maxbeg.append(m)

    def durable_begin(self, c):
        n = bisect.bisect_left(self.ends, c)
        return self.maxbeg[n - 1] if n else -1


class FileModel:
    def __init__(self, key, initial):
        self.key, self.initial, self.events, self.pairs = key, initial, [], []
        self.sync = None

    def finish(self, global_pairs):
        self.sync = SyncIndex(self.pairs + global_pairs)


class Model:
    """A run's log and initial files, and the crash states they allow."""

    def __init__(self, wdir, seed=0):
        self.wdir, self.seed = wdir, seed
        with open(os.path.join(wdir, 'meta.json')) as f:
            self.meta = json.load(f)
        self.run_dir = self.meta['run_dir']
        self.pristine = os.path.join(wdir, 'pristine')
        self.evs = evs = parse_log(os.path.join(wdir, 'log'))
        self.initial_ns = {p: tuple(k) for p, k in self.meta['initial'].items()}
        self.initial_path = initial_path = {k: p for p, k in self.initial_ns.items()}
        self.files, self.ns_ops, self.warnings = {}, [], []
        open_begin, global_pairs, dir_pairs = {}, [], {}
        for e in evs:
            if e.type == OPEN:
                if e.key not in self.files:
                    if e.key in initial_path:
                        rel = os.path.relpath(initial_path[e.key], self.run_dir)
                        with open(os.path.join(self.pristine, rel), 'rb') as f:
                            init = f.read()
                    else:
                        if not e.created:
                            self.warnings.append('%s: not a file of the run dir at the start; '
                                                 'taken as empty' % e.path)
                        init = b''
                    self.files[e.key] = FileModel(e.key, init)
                if e.created:
                    self.ns_ops.append(e.idx)
            elif e.type in (RENAME, UNLINK):
                self.ns_ops.append(e.idx)
            elif e.type in (WRITE, TRUNC, FALLOC):
                self.files[e.key].events.append(e.idx)
            elif e.type in (SYNC_BEGIN, DIRSYNC_BEGIN):
                open_begin[(e.pid, e.tid)] = e
            elif e.type in (SYNC_END, DIRSYNC_END, SYNC_FAIL):
                b = open_begin.pop((e.pid, e.tid), None)
                if b is None or e.type == SYNC_FAIL:
                    continue
                if e.type == DIRSYNC_END:
                    dir_pairs.setdefault(e.path, []).append((b.idx, e.idx))
                elif e.c == SYNC_ALL:
                    global_pairs.append((b.idx, e.idx))
                elif e.c in (SYNC_FSYNC, SYNC_FDATASYNC):
                    self.files[e.key].pairs.append((b.idx, e.idx))
        for fm in self.files.values():
            fm.finish(global_pairs)
        self.dir_sync = {d: SyncIndex(p + global_pairs) for d, p in dir_pairs.items()}
        self.global_sync = SyncIndex(global_pairs)
        self._durable_cache = {}

    # -- names

    def _ns_durable(self, i, c):
        e = self.evs[i]
        for p in (e.path, e.path2):
            if p is None:
                continue
            s = self.dir_sync.get(os.path.dirname(p), self.global_sync)
            if s.durable_begin(c) > i:
                return True
        return False

    def ns_pending(self, c):
        return [i for i in self.ns_ops if i < c and not self._ns_durable(i, c)]

    def resolve(self, dec, path):
        """The file key under path in a crash state (None: no such file)."""
        ns = dict(self.initial_ns)
        keep = set(dec['ns_kept'])
        c = dec['c']
        for i in self.ns_ops:
            if i >= c:
                break
            if i in dec['ns_pending'] and i not in keep:
                continue
            e = self.evs[i]
            if e.type == OPEN:
                ns[e.path] = e.key
            elif e.type == RENAME:
                key = ns.pop(e.path, e.key)
                if e.c & 2:  # RENAME_EXCHANGE
                    other = ns.pop(e.path2, None)
                    if other is not None:
                        ns[e.path] = other
                ns[e.path2] = key
            elif e.type == UNLINK:
                ns.pop(e.path, None)
        return ns.get(path)

    # -- contents

    def pending(self, key, c):
        fm = self.files[key]
        b = fm.sync.durable_begin(c)
        lo = bisect.bisect_left(fm.events, b)
        hi = bisect.bisect_left(fm.events, c)
        return b, [i for i in fm.events[lo:hi] if not self.evs[i].sync]

    def durable_content(self, key, b):
        """The file with every event before index b applied (incrementally from the
        nearest cached point)."""
        fm = self.files[key]
        cache = self._durable_cache.setdefault(key, {})
        if b in cache:
            return cache[b]
        start = max([x for x in cache if x <= b], default=None)
        buf = bytearray(cache[start] if start is not None else fm.initial)
        lo = bisect.bisect_left(fm.events, start if start is not None else -1)
        for i in fm.events[lo:]:
            if i >= b:
                break
            apply_event(buf, self.evs[i])
        out = bytes(buf)
        if len(cache) >= 6:
            del cache[min(cache)]
        cache[b] = out
        return out

    def decide(self, c, mode, r):
        """A crash state: the cut c and which pending events it keeps.
        mode: durable (none), all (every pending one: the process-kill state),
        subset (random writes), torn (random pages of the pending writes)."""
        rng = random.Random('%d:%d:%s:%d' % (self.seed, c, mode, r))
        dec = {'c': c, 'mode': mode, 'r': r, 'files': {}}
        for key in self.files:
            b, pend = self.pending(key, c)
            writes = [i for i in pend if self.evs[i].type == WRITE]
            metas = [i for i in pend if self.evs[i].type != WRITE]
            if mode == 'durable':
                kept, nmeta = {}, 0
            elif mode == 'all':
                kept, nmeta = {i: None for i in writes}, len(metas)
            else:
                p = rng.choice((0.25, 0.5, 0.75))
                pieces = set()
                if mode == 'subset':
                    for i in writes:
                        if rng.random() < p:
                            pieces.update((i, pg) for pg in write_pages(self.evs[i]))
                else:
                    for i in writes:
                        for pg in write_pages(self.evs[i]):
                            if rng.random() < p:
                                pieces.add((i, pg))
                kept = self._close_pages(writes, pieces)
                nmeta = rng.randint(0, len(metas))
            dec['files'][key] = {'b': b, 'writes': writes, 'kept': kept,
                                 'metas': metas, 'metas_kept': metas[:nmeta]}
        nsp = self.ns_pending(c)
        n = 0 if mode == 'durable' else len(nsp) if mode == 'all' else rng.randint(0, len(nsp))
        dec['ns_pending'], dec['ns_kept'] = set(nsp), nsp[:n]
        return dec

    def _close_pages(self, writes, pieces):
        """Close a set of (write, page) pieces downwards per page: a page on the disk
        holds the page cache's content as of some moment, i.e. a prefix of the writes
        to that page. Returns write -> None (whole) or frozenset of pages."""
        by_page = {}
        for i in writes:
            for pg in write_pages(self.evs[i]):
                by_page.setdefault(pg, []).append(i)
        keep = {}
        for pg, lst in by_page.items():
            last = -1
            for k, i in enumerate(lst):
                if (i, pg) in pieces:
                    last = k
            for i in lst[:last + 1]:
                keep.setdefault(i, set()).add(pg)
        out = {}
        for i, pgs in keep.items():
            out[i] = None if len(pgs) == len(write_pages(self.evs[i])) else frozenset(pgs)
        return out

    def content(self, key, dec):
        fd = dec['files'][key]
        buf = bytearray(self.durable_content(key, fd['b']))
        fm, c = self.files[key], dec['c']
        kept, metas = fd['kept'], set(fd['metas_kept'])
        lo = bisect.bisect_left(fm.events, fd['b'])
        for i in fm.events[lo:]:
            if i >= c:
                break
            e = self.evs[i]
            if e.sync or i in metas:
                apply_event(buf, e)
            elif i in kept:
                apply_event(buf, e, kept[i])
        return bytes(buf)

    def state_files(self, dec, paths):
        """{path: bytes or None} for the judged paths in a crash state."""
        out = {}
        for p in paths:
            key = self.resolve(dec, p)
            if key is None:
                out[p] = None
            elif key in self.files:
                out[p] = self.content(key, dec)
            else:  # never written: as it was
                rel = os.path.relpath(self.initial_path[key], self.run_dir)
                with open(os.path.join(self.pristine, rel), 'rb') as f:
                    out[p] = f.read()
        return out

    def cuts(self):
        """Cut points worth a state: the start, after each sync END (flush boundaries),
        and after each write, size change or name change."""
        out = [(0, True)]
        for e in self.evs:
            if e.type in (SYNC_END, DIRSYNC_END):
                out.append((e.idx + 1, True))
            elif e.type in (WRITE, TRUNC, FALLOC, RENAME, UNLINK) or (e.type == OPEN and e.created):
                out.append((e.idx + 1, False))
        return out

    def specs(self, per_cut, max_states, rng):
        """(cut, mode, r) triples to build. The cuts after a name change and the end of
        the log get more random variants: a renamed target appears only there (convert)."""
        durable, names, rest = [], [], []
        extra = max(per_cut, 12)
        for c, boundary in self.cuts() + [(len(self.evs), None)]:
            if boundary:
                durable.append((c, 'durable', 0))
                continue
            rest.append((c, 'all', 0))
            wide = boundary is None or self.evs[c - 1].type in (RENAME, UNLINK)
            for r in range(extra if wide else per_cut):
                (names if wide else rest).extend([(c, 'subset', r), (c, 'torn', r)])
        if max_states and len(durable) + len(names) + len(rest) > max_states:
            if len(durable) > max_states // 4:
                durable = rng.sample(durable, max_states // 4)
            if len(names) > max_states // 4:
                names = rng.sample(names, max_states // 4)
            rest = rng.sample(rest, max(0, min(len(rest), max_states - len(durable) - len(names))))
        return sorted(set(durable + names + rest))

    def final_check(self, paths):
        """The log replayed in full must give the files as the run left them: the shim
        saw every write."""
        c = len(self.evs)
        dec = {'c': c, 'mode': 'all', 'r': 0, 'files': {}, 'ns_pending': set(), 'ns_kept': []}
        for key in self.files:
            b, pend = self.pending(key, c)
            dec['files'][key] = {'b': b, 'writes': pend, 'kept': {i: None for i in pend},
                                 'metas': [], 'metas_kept': pend}
        bad = []
        for p, data in self.state_files(dec, paths).items():
            exists = os.path.exists(p)
            if data is None and not exists:
                continue
            real = open(p, 'rb').read() if exists else None
            if real != data:
                bad.append(p)
        return bad
