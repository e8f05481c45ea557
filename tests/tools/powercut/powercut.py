#!/usr/bin/env python3
"""powercut: a power-cut simulator for disk-image writers (python3, stdlib only).

A power cut is not a SIGKILL. Writes issued after the last completed fsync/fdatasync may
reach the disk in any order and torn per 4 KiB page. This tool runs a writer (vtool
through tests/blkio, vtool img convert/bench/snapshot/resize, or qemu-io/qemu-img as
the control) under the LD_PRELOAD shim (shim.c, which documents the log format),
rebuilds from the log the files a power cut at each point could leave, and judges every
such crash state:

  * metadata: `qemu-img check` (and `vtool img check` with --vtool). Leaks are allowed;
    corruptions, check errors or an image that does not open are failures. With
    lazy_refcounts=on a state fails only if `qemu-img check -r all` on a copy cannot
    make it clean.
  * data (script workloads): every 512-byte guest sector must read as it was at the last
    completed guest flush, or as some guest operation issued after that flush left it
    (see Oracle). Backing-file data and flushed data are never lost.
  * convert: if the target name exists, it must be a complete copy of the source;
    snapshot and resize: the disk reads as before or after each command (a list of raw
    images, qemu-img compare, so a longer disk's new part must read as zeros).

Files: shim.c (the LD_PRELOAD recorder and its log format), pc_model.py (the log and
the crash-state model: which writes may be lost or torn at each cut, and how states are
enumerated), pc_guest.py (stamped guest data, workload scripts, the data oracle),
pc_workloads.py (named workloads and the two executors), this file (judging, reports,
command line).

Usage: see `powercut.py --help` and tests/integration/img-powercut.sh. Typical:
  powercut.py selftest --shim build/tests/powercut-shim.so
  powercut.py suite --shim build/tests/powercut-shim.so --blkio build/tests/blkio \\
      --vtool build/cli/vtool --out /tmp/pc          # the default set, about a minute
  powercut.py suite ... --seeds 1-2 --max-states 0   # long run: ~16,000 states, ~12 min
Exit status: 0 when no state failed, 1 otherwise (reproducers in OUT/repro/*/state.json).
"""
import argparse
import bisect
import hashlib
import json
import os
import random
import shutil
import struct
import sys
import tempfile
import time

from pc_guest import SECTOR, Oracle, format_script, op_data, parse_script
from pc_model import (Model, parse_log, write_pages, PAGE, WRITE, RENAME, TYPE_NAMES)
from pc_workloads import (WORKLOADS, executor_argv, must, prepare, read_raw, run_under_shim, sh)

# ---------------------------------------------------------------------------------------
# What a host offset is, in a qcow2 file (for the reproducers)

class Qcow2Map:
    def __init__(self, data):
        self.ranges = []
        try:
            self._parse(data)
        except (struct.error, ValueError, IndexError):
            pass
        self.ranges.sort()
        self.starts = [r[0] for r in self.ranges]

    def _parse(self, d):
        magic, version = struct.unpack_from('>II', d, 0)
        if magic != 0x514649fb:
            return
        cb = struct.unpack_from('>I', d, 20)[0]
        cs = 1 << cb
        l1_size, l1_off, rt_off, rt_clusters = struct.unpack_from('>IQQI', d, 36)
        incompat = struct.unpack_from('>Q', d, 72)[0] if version >= 3 else 0
        ext_l2 = bool(incompat & 16)
        self.ranges.append((0, cs, 'header'))
        self.ranges.append((l1_off, l1_off + l1_size * 8, 'L1 table'))
        self.ranges.append((rt_off, rt_off + rt_clusters * cs, 'refcount table'))
        ebytes = 16 if ext_l2 else 8
        for i in range(l1_size):
            l2 = struct.unpack_from('>Q', d, l1_off + 8 * i)[0] & 0x00fffffffffffe00
            if not l2:
                continue
            self.ranges.append((l2, l2 + cs, 'L2 table %d' % i))
            for k in range(cs // ebytes):
                ent = struct.unpack_from('>Q', d, l2 + k * ebytes)[0]
                guest = (i * (cs // ebytes) + k) * cs
                if ent & (1 << 62):
                    x = 62 - (cb - 8)
                    off = ent & ((1 << x) - 1)
                    nsec = ((ent >> x) & ((1 << (cb - 8)) - 1)) + 1
                    self.ranges.append((off, (off & ~511) + nsec * 512, 'compressed data of guest %#x' % guest))
                elif ent & 0x00fffffffffffe00:
                    off = ent & 0x00fffffffffffe00
                    self.ranges.append((off, off + cs, 'data of guest %#x' % guest))
        for i in range(rt_clusters * cs // 8):
            rb = struct.unpack_from('>Q', d, rt_off + 8 * i)[0] & ~511
            if rb:
                self.ranges.append((rb, rb + cs, 'refcount block %d' % i))

    def what(self, off, length):
        k = bisect.bisect_right(self.starts, off) - 1
        found = []
        while k >= 0 and len(found) < 3:
            s, e, name = self.ranges[k]
            if s <= off < e:
                found.append(name)
            if s < off - (1 << 21):
                break
            k -= 1
        if found:
            return ' / '.join(found)
        return 'not referenced by the final image (free, leaked or reused)'


# ---------------------------------------------------------------------------------------
# Judging crash states

def check_verdict(argv):
    """Run a `check --output=json`: (class, rc, output). class: clean | leaks | corrupt |
    error (the check could not complete, or the image does not open)."""
    r = sh(argv, timeout=120)
    out = r.stdout.decode(errors='replace')
    err = r.stderr.decode(errors='replace')
    try:
        j = json.loads(out) if out.strip() else {}
    except ValueError:
        j = {}
    if j.get('corruptions', 0) or r.returncode == 2:
        cls = 'corrupt'
    elif j.get('check-errors', 0) or r.returncode not in (0, 3) or not j:
        cls = 'error'
    elif j.get('leaks', 0) or r.returncode == 3:
        cls = 'leaks'
    else:
        cls = 'clean'
    return cls, r.returncode, (out + err).strip()


def check_image(tool, path, lazy):
    """(class, details) of a qcow2 file by qemu-img (tool 'qemu-img') or vtool."""
    base = [tool, 'check'] if tool == 'qemu-img' else [tool, 'img', 'check']
    cls, rc, out = check_verdict(base + ['-f', 'qcow2', '--output=json', path])
    det = {'rc': rc, 'output': out[:3000]}
    if lazy and cls in ('corrupt', 'error'):
        # lazy_refcounts: refcounts may lag; the state is fine if a repair makes it clean.
        tmp = path + '.repair'
        shutil.copyfile(path, tmp)
        r = sh(base + ['-f', 'qcow2', '-r', 'all', tmp], timeout=120)
        cls2, rc2, out2 = check_verdict(base + ['-f', 'qcow2', '--output=json', tmp])
        os.unlink(tmp)
        det['repair'] = {'rc': r.returncode, 'after': cls2}
        if cls2 in ('clean', 'leaks'):
            cls = 'repaired'
    return cls, det


FAILING = ('corrupt', 'error')


class Stats:
    def __init__(self):
        self.states = self.corrupt = self.loss = self.leaks = self.disagree = self.absent = 0
        self.unchecked = self.generated = 0
        self.failures = []

    def add(self, o):
        for k in ('states', 'corrupt', 'loss', 'leaks', 'disagree', 'absent', 'unchecked', 'generated'):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.failures += o.failures

    def line(self, label):
        s = '%s: %d states, %d corrupt, %d data-loss, %d leaks-only, %d vtool/qemu disagree' % (
            label, self.states, self.corrupt, self.loss, self.leaks, self.disagree)
        extra = []
        if self.absent:
            extra.append('%d without the target' % self.absent)
        if self.unchecked:
            extra.append('%d sectors unchecked' % self.unchecked)
        return s + (' (%s)' % ', '.join(extra) if extra else '')


def judge(wdir, judge_rel, *, lazy=False, oracle=None, compare_src=None, vtool=None,
          per_cut=2, max_states=100, seed=0, repro_dir=None, repro_max=3, label='',
          tmpdir=None, verbose=False):
    """Enumerate and judge the crash states of a run in wdir. Returns Stats."""
    st = Stats()
    model = Model(wdir, seed)
    for w in model.warnings:
        print('warning: %s' % w, file=sys.stderr)
    if model.meta['rc'] != 0:
        st.failures.append({'error': 'the workload failed (exit %d): %s' % (
            model.meta['rc'], model.meta['stderr'][-500:])})
        st.corrupt += 1
        return st
    paths = [os.path.join(model.run_dir, p) for p in judge_rel]
    bad = model.final_check(paths)
    if bad:
        raise RuntimeError('%s: replaying the whole log does not give the final %s: the '
                           'shim missed a write' % (wdir, ', '.join(bad)))
    image_key = model.resolve(_full_dec(model), paths[0])
    if oracle is not None:
        oracle.locate(model, image_key)
    rng = random.Random('specs:%d' % seed)
    specs = model.specs(per_cut, max_states, rng)
    st.generated = len(specs)
    sdir = tempfile.mkdtemp(prefix='powercut-', dir=tmpdir)
    try:
        # Everything but the judged files (backing files, sources) is linked in as is.
        for name in os.listdir(model.pristine):
            if name not in judge_rel:
                os.symlink(os.path.join(os.path.realpath(model.pristine), name), os.path.join(sdir, name))
        seen, check_cache = set(), {}
        final_map = None
        for (c, mode, r) in specs:
            dec = model.decide(c, mode, r)
            files = model.state_files(dec, paths)
            h = hashlib.sha1()
            for p in paths:
                h.update(b'-' if files[p] is None else hashlib.sha1(files[p]).digest())
            chash = h.hexdigest()
            ep = oracle.epoch(c) if oracle is not None else 0
            if (chash, ep) in seen:
                continue
            seen.add((chash, ep))
            st.states += 1
            img = os.path.join(sdir, judge_rel[0])
            data = files[paths[0]]
            if data is None:
                st.absent += 1
                continue
            with open(img, 'wb') as f:
                f.write(data)
            if chash not in check_cache:
                q = check_image('qemu-img', img, lazy)
                v = check_image(vtool, img, lazy) if vtool else None
                check_cache[chash] = (q, v)
            (qcls, qdet), v = check_cache[chash]
            fail = []
            if qcls in FAILING:
                st.corrupt += 1
                fail.append('qemu-img check: %s' % qcls)
            elif qcls == 'leaks':
                st.leaks += 1
            if v is not None:
                vcls = v[0]
                norm = {'repaired': 'clean'}
                if norm.get(vcls, vcls) != norm.get(qcls, qcls) and not (
                        vcls in FAILING and qcls in FAILING):
                    st.disagree += 1
                    if verbose:
                        print('  disagree at cut %d (%s): qemu-img %s, vtool %s' % (c, mode, qcls, vcls))
                    if repro_dir and st.disagree <= repro_max:
                        if final_map is None:
                            final_map = Qcow2Map(model.content(image_key, _full_dec(model))
                                                 if image_key in model.files else b'')
                        write_repro(os.path.join(repro_dir, '%s-disagree-%d' % (label, st.disagree)),
                                    model, dec, img, judge_rel,
                                    ['disagree: qemu-img %s, vtool %s' % (qcls, vcls)], qdet, v,
                                    None, oracle, ep, final_map, model.resolve(dec, paths[0]), sdir)
            mism = None
            if oracle is not None:
                raw = os.path.join(sdir, 'state.raw')
                rr = sh(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', img, raw], timeout=120)
                if rr.returncode != 0:
                    if qcls not in FAILING:
                        mism = [(-1, 'unreadable: %s' % rr.stderr.decode(errors='replace')[:300], [])]
                else:
                    with open(raw, 'rb') as f:
                        mism = oracle.check(f.read(), ep)
                    os.unlink(raw)
                    for s in oracle.touched:
                        if oracle.cands(ep, s) is None:
                            st.unchecked += 1
            elif compare_src:
                # One source, or a list of acceptable ones (the disk before or after a
                # command that changes it at once): the image must read as one of them.
                srcs = [compare_src] if isinstance(compare_src, str) else list(compare_src)
                for src in srcs:
                    rr = sh(['qemu-img', 'compare', '-f', 'raw', '-F', 'qcow2',
                             os.path.join(sdir, src), img], timeout=120)
                    if rr.returncode == 0:
                        break
                if rr.returncode != 0:
                    mism = [(-1, 'qemu-img compare exit %d: %s' % (
                        rr.returncode, (rr.stdout + rr.stderr).decode(errors='replace')[:300]), [])]
            if mism:
                st.loss += 1
                fail.append('data: %d sector(s) wrong' % len(mism))
            if fail:
                kind = 'corrupt' if qcls in FAILING else 'data'
                st.failures.append({'cut': c, 'mode': mode, 'kind': kind})
                n = sum(1 for f in st.failures if f.get('kind') == kind)
                if repro_dir and n <= repro_max:
                    if final_map is None:
                        final_map = Qcow2Map(model.content(image_key, _full_dec(model)) if
                                             image_key in model.files else b'')
                    write_repro(os.path.join(repro_dir, '%s-%s-%d' % (label, kind, n)), model, dec,
                                img, judge_rel, fail, qdet, v, mism, oracle, ep, final_map,
                                model.resolve(dec, paths[0]), sdir)
    finally:
        shutil.rmtree(sdir, ignore_errors=True)
    return st


def _full_dec(model):
    c = len(model.evs)
    dec = {'c': c, 'mode': 'all', 'r': 0, 'files': {}, 'ns_pending': set(), 'ns_kept': []}
    for key in model.files:
        b, pend = model.pending(key, c)
        dec['files'][key] = {'b': b, 'writes': pend, 'kept': {i: None for i in pend},
                             'metas': [], 'metas_kept': pend}
    return dec


def write_repro(d, model, dec, img, judge_rel, fail, qdet, v, mism, oracle, ep, qmap, key, sdir):
    """A failing crash state: the image (and what it needs) and state.json saying which
    writes were dropped."""
    os.makedirs(d, exist_ok=True)
    shutil.copyfile(img, os.path.join(d, judge_rel[0]))
    for name in os.listdir(sdir):
        src = os.path.join(sdir, name)
        if os.path.islink(src):
            shutil.copyfile(os.path.realpath(src), os.path.join(d, name))
    evs = model.evs
    c = dec['c']
    info = {
        'verdict': fail,
        'cut': c,
        'cut_after': evs[c - 1].describe() if c else 'nothing (initial state)',
        'mode': dec['mode'],
        'log_events': len(evs),
        'qemu_img_check': qdet,
    }
    if v is not None:
        info['vtool_check'] = {'class': v[0], **v[1]}
    hr = sh(['qemu-img', 'check', '-f', 'qcow2', img])
    info['qemu_img_check_human'] = (hr.stdout + hr.stderr).decode(errors='replace')[:4000]
    if key in dec['files']:
        fd = dec['files'][key]
        info['durable_up_to_event'] = fd['b']
        info['durable_because'] = evs[fd['b']].describe() + ' (its END precedes the cut)' if fd['b'] >= 0 else 'no completed sync yet'
        dropped, torn = [], []
        for i in fd['writes']:
            e = evs[i]
            desc = {'event': i, 'off': e.a, 'len': len(e.data), 'what': qmap.what(e.a, len(e.data))}
            k = fd['kept'].get(i, 'dropped')
            if k == 'dropped':
                dropped.append(desc)
            elif k is not None:
                allp = list(write_pages(e))
                desc['pages_dropped'] = [p * PAGE for p in allp if p not in k]
                torn.append(desc)
        info['pending_writes'] = len(fd['writes'])
        info['dropped_writes'] = dropped
        info['torn_writes'] = torn
        info['dropped_size_changes'] = [{'event': i, 'what': evs[i].describe()} for i in fd['metas']
                                        if i not in fd['metas_kept']]
    info['dropped_name_changes'] = [evs[i].describe() for i in dec['ns_pending'] if i not in dec['ns_kept']]
    if mism:
        info['guest_epoch'] = ('after guest flush #%d (op %d)' % (ep, oracle.flushes[ep - 1])
                               if oracle is not None and ep else 'before the first guest flush')
        info['data_mismatches'] = [
            {'guest_offset': s * SECTOR if s >= 0 else None, 'found': oracle.describe(f, s) if oracle and isinstance(f, bytes) else f,
             'allowed': [oracle.describe(x, s) for x in exp][:6] if oracle else exp}
            for s, f, exp in mism]
    with open(os.path.join(d, 'state.json'), 'w') as f:
        json.dump(info, f, indent=1, default=str)


# ---------------------------------------------------------------------------------------
# Command line

def parse_seeds(s):
    out = []
    for part in s.split(','):
        if '-' in part:
            a, b = part.split('-')
            out += range(int(a), int(b) + 1)
        else:
            out.append(int(part))
    return out


def run_one(wl, executor, tools, out, args):
    """Prepare, run and judge one workload with one executor. Returns Stats."""
    wdir = os.path.join(out, 'work', '%s-s%d-%s' % (wl.name, wl.seed, executor))
    if os.path.exists(wdir):
        shutil.rmtree(wdir)
    prepare(wl, os.path.join(wdir, 'pristine'))
    argv = executor_argv(wl, executor, tools, wdir)
    targets = [''] if wl.kind == 'process' and wl.compare_src else [wl.image]
    meta = run_under_shim(tools['shim'], wdir, argv, targets,
                          readonly=('base.raw', 'src.raw'))
    oracle = None
    if wl.kind == 'script' and meta['rc'] == 0:
        initial = read_raw(os.path.join(wdir, 'pristine', wl.image))
        backing = None
        if wl.backing:
            with open(os.path.join(wdir, 'pristine', 'base.raw'), 'rb') as f:
                backing = f.read()
        oracle = Oracle(wl.seed, wl.ops, initial, backing)
    label = '%s-s%d-%s' % (wl.name, wl.seed, executor)
    st = judge(wdir, wl.judge, lazy=wl.lazy, oracle=oracle, compare_src=wl.compare_src,
               vtool=None if args.no_vtool_check else tools.get('vtool'), per_cut=args.per_cut,
               max_states=args.max_states, seed=wl.seed,
               repro_dir=os.path.join(out, 'repro'), repro_max=args.repro, label=label,
               tmpdir=args.tmpdir, verbose=args.verbose)
    if args.verbose:
        print('  %s: %d log records, %d states generated, run %.2fs' % (
            label, len(parse_log(os.path.join(wdir, 'log'))), st.generated, meta['seconds']))
    if not args.keep_work and not st.failures:
        shutil.rmtree(wdir, ignore_errors=True)
    return st


def cmd_suite(args):
    absp = lambda p: os.path.abspath(p) if p else p
    tools = {'shim': absp(args.shim), 'blkio': absp(args.blkio), 'vtool': absp(args.vtool)}
    names = args.workloads.split(',') if args.workloads else list(WORKLOADS)
    for n in names:
        if n not in WORKLOADS:
            sys.exit('powercut: unknown workload %r (see `powercut.py list`)' % n)
    executors = args.executors.split(',')
    seeds = parse_seeds(args.seeds)
    os.makedirs(args.out, exist_ok=True)
    total, failed, t0 = Stats(), False, time.time()
    results = {}
    for n in names:
        for ex in executors:
            agg, ran = Stats(), False
            for seed in seeds:
                wl = WORKLOADS[n](seed, args.scale)
                if ex not in wl.executors():
                    continue
                if ex == 'vtool' and ((wl.kind == 'script' and not args.blkio) or
                                      (wl.kind == 'process' and not args.vtool)):
                    continue
                ran = True
                agg.add(run_one(wl, ex, tools, args.out, args))
            if not ran:
                continue
            who = {'vtool': 'vtool', 'qemu': 'qemu-io' if WORKLOADS[n](1, 1).kind == 'script' else 'qemu-img'}[ex]
            print(agg.line('%s [%s]' % (n, who)), flush=True)
            results['%s/%s' % (n, ex)] = {k: getattr(agg, k) for k in (
                'states', 'corrupt', 'loss', 'leaks', 'disagree', 'absent', 'generated')}
            total.add(agg)
            if agg.failures:
                failed = True
                for f in agg.failures:
                    if 'error' in f:
                        print('  %s' % f['error'], file=sys.stderr)
    print(total.line('total') + ' in %.0fs' % (time.time() - t0))
    with open(os.path.join(args.out, 'summary.json'), 'w') as f:
        json.dump(results, f, indent=1)
    if failed:
        print('reproducers: %s' % os.path.join(args.out, 'repro'))
    return 1 if failed else 0


def cmd_list(args):
    for n, g in WORKLOADS.items():
        wl = g(1, 1)
        desc = wl.note or (wl.create_opts or 'qcow2 defaults')
        if wl.kind == 'script':
            desc = '%d ops, cache=%s, depth %d; %s' % (sum(o.kind != 'flush' for o in wl.ops), wl.cache, wl.depth, desc)
        print('%-16s %-8s %s' % (n, wl.kind, desc))
    return 0


def cmd_gen(args):
    wl = WORKLOADS[args.workload](args.seed, args.scale)
    if wl.kind != 'script':
        sys.exit('powercut: %s runs a command, it has no script' % args.workload)
    sys.stdout.write(format_script(wl.seed, wl.depth, wl.ops))
    return 0


def cmd_data(args):
    """Write the bytes op OP of a script writes (for qemu-io -s, or to inspect)."""
    with open(args.script) as f:
        seed, _, ops = parse_script(f.read())
    o = ops[args.op]
    sys.stdout.buffer.write(op_data(seed, o.idx, o.off, o.len, o.kind == 'wcomp'))
    return 0


def cmd_run(args):
    """Generic run: copy the files, run the command under the shim."""
    pristine = os.path.join(args.workdir, 'pristine')
    os.makedirs(pristine, exist_ok=True)
    for f in args.file + args.backing:
        shutil.copyfile(f, os.path.join(pristine, os.path.basename(f)))
    argv = args.command[1:] if args.command[:1] == ['--'] else args.command
    meta = run_under_shim(args.shim, args.workdir, argv, args.target or [''],
                          readonly=[os.path.basename(f) for f in args.backing])
    print('exit %d, %d log records in %s' % (meta['rc'], len(parse_log(os.path.join(args.workdir, 'log'))),
                                              os.path.join(args.workdir, 'log')))
    return meta['rc']


def cmd_judge(args):
    oracle = None
    if args.script:
        with open(args.script) as f:
            seed, _, ops = parse_script(f.read())
        initial = read_raw(os.path.join(args.workdir, 'pristine', args.judge[0]))
        backing = None
        if args.backing_raw:
            with open(args.backing_raw, 'rb') as f:
                backing = f.read()
        oracle = Oracle(seed, ops, initial, backing)
    st = judge(args.workdir, args.judge, lazy=args.lazy, oracle=oracle, compare_src=args.compare_src,
               vtool=args.vtool, per_cut=args.per_cut, max_states=args.max_states, seed=args.seed,
               repro_dir=os.path.join(args.workdir, 'repro'), repro_max=args.repro,
               label=os.path.basename(os.path.normpath(args.workdir)), tmpdir=args.tmpdir,
               verbose=args.verbose)
    print(st.line(os.path.basename(os.path.normpath(args.workdir))))
    return 1 if st.failures else 0


SELFTEST_CHILD = r"""
import ctypes, fcntl, mmap, os, sys, threading
d = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(d + '/a', os.O_RDWR | os.O_CREAT, 0o644)
os.pwrite(fd, b'p' * 5000, 100)
os.write(fd, b'hello')
os.writev(fd, [b'ab', b'cd'])
os.pwritev(fd, [b'1' * 10, b'2' * 10], 8000)
fd2 = os.dup(fd)
os.pwrite(fd2, b'D', 50)
os.dup2(fd, 100)
os.pwrite(100, b'E', 60)
fd4 = fcntl.fcntl(fd, fcntl.F_DUPFD, 200)
os.pwrite(fd4, b'F', 70)
os.ftruncate(fd, 7000)
os.posix_fallocate(fd, 0, 20000)
os.fdatasync(fd)
assert libc.fallocate(fd, 0x10, ctypes.c_long(1000), ctypes.c_long(500)) == 0   # zero range
assert libc.fallocate(fd, 0x3, ctypes.c_long(3000), ctypes.c_long(4096)) == 0   # punch hole
src = os.open(d + '/../selftest-src', os.O_RDWR | os.O_CREAT, 0o644)
os.pwrite(src, b'S' * 3000, 0)
assert os.copy_file_range(src, fd, 3000, 0, 10000) == 3000
assert libc.sync_file_range(fd, ctypes.c_long(0), ctypes.c_long(0), 2) == 0
os.fsync(fd)
os.truncate(d + '/a', 15000)
os.pwritev(fd, [b'Z'], 0, os.RWF_DSYNC)
df = os.open(d + '/a', os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
buf.write(b'O' * 4096)
os.pwritev(df, [buf], 16384)
def worker(k):
    for i in range(50):
        os.pwrite(fd, bytes([65 + k]) * 100, 20480 + (k * 50 + i) * 100)
ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
for x in (fd, fd2, 100, fd4, df, src):
    os.close(x)
os.rename(d + '/a', d + '/b')
c = os.open(d + '/c', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(c, b'gone')
os.close(c)
os.unlink(d + '/c')
os.rename(d + '/old', d + '/b2')
dfd = os.open(d, os.O_RDONLY)
os.fsync(dfd)
os.close(dfd)
"""


def cmd_selftest(args):
    """Check the shim on the calls it covers: the log replayed must give the files."""
    with tempfile.TemporaryDirectory(prefix='powercut-selftest-') as tdir:
        wdir = os.path.join(tdir, 'w')
        os.makedirs(os.path.join(wdir, 'pristine'))
        with open(os.path.join(wdir, 'pristine', 'old'), 'wb') as f:
            f.write(b'old file' * 100)
        child = os.path.join(tdir, 'child.py')
        with open(child, 'w') as f:
            f.write(SELFTEST_CHILD)
        meta = run_under_shim(args.shim, wdir, [sys.executable, child, os.path.join(wdir, 'run')], [''])
        if meta['rc'] != 0:
            print('selftest: the child failed: %s' % meta['stderr'], file=sys.stderr)
            return 1
        model = Model(wdir)
        types = {}
        for e in model.evs:
            types[TYPE_NAMES[e.type]] = types.get(TYPE_NAMES[e.type], 0) + 1
        want = {'open': 3, 'write': 211, 'truncate': 3, 'fallocate': 3, 'sync-begin': 3,
                'sync-end': 3, 'close': 6, 'rename': 2, 'unlink': 1, 'dirsync-begin': 1,
                'dirsync-end': 1}
        bad = ['%s: %d logged, %d expected' % (k, types.get(k, 0), v) for k, v in want.items()
               if types.get(k, 0) != v]
        run = model.run_dir
        bad += ['%s differs from the log replayed' % p for p in
                model.final_check([run + '/b', run + '/b2', run + '/c', run + '/old'])]
        dsync = [e for e in model.evs if e.type == WRITE and e.sync]
        if len(dsync) != 1:
            bad.append('%d RWF_DSYNC writes logged, 1 expected' % len(dsync))
        # The rename of a (created, not yet durable) file: before the directory fsync a
        # state may have either name.
        c = [e.idx for e in model.evs if e.type == RENAME][0] + 1
        seen = set()
        for r in range(20):
            dec = model.decide(c, 'subset', r)
            seen.add(model.resolve(dec, run + '/b') is not None)
        if seen != {True, False}:
            bad.append('a pending rename is not both kept and dropped: %s' % seen)
        for b in bad:
            print('selftest: %s' % b, file=sys.stderr)
        print('selftest: %d log records, %s' % (len(model.evs), 'FAILED' if bad else 'ok'))
        return 1 if bad else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)

    def judging(p):
        p.add_argument('--per-cut', type=int, default=2,
                       help='random-subset and torn states per cut point (default 2 each)')
        p.add_argument('--max-states', type=int, default=100,
                       help='states generated per run, sampled (0: all; default 100)')
        p.add_argument('--repro', type=int, default=3,
                       help='reproducers kept per run and kind: corrupt, data, disagree (default 3)')
        p.add_argument('--tmpdir', default='/dev/shm' if os.path.isdir('/dev/shm') else None,
                       help='where crash states are built (default /dev/shm)')
        p.add_argument('-v', '--verbose', action='store_true')

    p = sub.add_parser('suite', help='run named workloads under both executors and judge them')
    p.add_argument('--shim', required=True, help='the built powercut-shim.so')
    p.add_argument('--blkio', help='tests/blkio (the vtool executor of script workloads)')
    p.add_argument('--vtool', help='vtool: runs the process workloads, and judges every state '
                   'with `vtool img check` too (counted as "disagree" when its verdict differs)')
    p.add_argument('--no-vtool-check', action='store_true',
                   help='do not run `vtool img check` on the states')
    p.add_argument('--workloads', help='comma-separated names (default: all; see list)')
    p.add_argument('--executors', default='vtool,qemu',
                   help='vtool (blkio script / vtool commands) and qemu (qemu-io / qemu-img '
                   'bench, the control); default both')
    p.add_argument('--seeds', default='1', help='e.g. 1 or 1-5 or 1,4,9')
    p.add_argument('--scale', type=float, default=1.0, help='multiplies every op count')
    p.add_argument('--out', default='powercut-out',
                   help='work dirs of failing runs, repro/, summary.json (default powercut-out)')
    p.add_argument('--keep-work', action='store_true', help='keep the work dirs of passing runs')
    judging(p)
    p.set_defaults(func=cmd_suite)

    p = sub.add_parser('selftest', help='check the shim on every call it covers')
    p.add_argument('--shim', required=True)
    p.set_defaults(func=cmd_selftest)

    p = sub.add_parser('list', help='list the named workloads')
    p.set_defaults(func=cmd_list)

    p = sub.add_parser('gen', help='print the script of a named workload')
    p.add_argument('workload', choices=sorted(WORKLOADS))
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--scale', type=float, default=1.0)
    p.set_defaults(func=cmd_gen)

    p = sub.add_parser('data', help='print the bytes an op of a script writes')
    p.add_argument('script')
    p.add_argument('op', type=int)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser('run', help='copy files to WORKDIR and run a command there under the shim')
    p.add_argument('--shim', required=True)
    p.add_argument('--workdir', required=True)
    p.add_argument('--file', action='append', default=[], help='initial file (copied)')
    p.add_argument('--backing', action='append', default=[], help='read-only file (copied)')
    p.add_argument('--target', action='append', help='file (name in WORKDIR/run) to record; '
                   'default: every file there')
    p.add_argument('command', nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser('judge', help='enumerate and judge the crash states of a `run`')
    p.add_argument('workdir')
    p.add_argument('--judge', action='append', required=True, help='image name to judge')
    p.add_argument('--script', help='workload script: enables the data oracle')
    p.add_argument('--backing-raw', help='raw content of the backing file (for discards)')
    p.add_argument('--compare-src', help='the judged image, when present, must equal this file')
    p.add_argument('--lazy', action='store_true', help='lazy_refcounts image: repairable = fine')
    p.add_argument('--vtool', help='also judge with `vtool img check`')
    p.add_argument('--seed', type=int, default=0)
    judging(p)
    p.set_defaults(func=cmd_judge)

    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
