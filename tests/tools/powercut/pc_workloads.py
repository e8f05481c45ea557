"""Named powercut workloads, and running a workload under the shim."""
import json
import os
import random
import shutil
import subprocess
import tempfile
import time

from pc_guest import Op, SECTOR, format_script, op_data
from pc_model import PAGE

# ---------------------------------------------------------------------------------------
# Named workloads. Each is a function (seed, scale) -> Workload; `scale` multiplies the
# op count. Script workloads run under two executors: "vtool" (tests/blkio script, through
# blk.h) and "qemu" (qemu-io, the control). Process workloads run a whole command.

KIB, MIB = 1024, 1024 * 1024


class Workload:
    def __init__(self, name, **kw):
        self.name = name
        self.kind = kw.get('kind', 'script')   # script | process
        self.image = kw.get('image', 'img.qcow2')
        self.vsize = kw.get('vsize', 4 * MIB)
        self.create_opts = kw.get('create_opts', '')
        self.backing = kw.get('backing')       # size of a random raw base.raw, or None
        self.prefill = kw.get('prefill', [])   # qemu-io commands run before the test
        self.cache = kw.get('cache', 'writeback')
        self.depth = kw.get('depth', 1)
        self.lazy = 'lazy_refcounts=on' in self.create_opts
        self.seed = kw.get('seed', 1)
        self.ops = kw.get('ops', [])
        self.commands = kw.get('commands', {})  # process: executor -> argv template
        self.judge = kw.get('judge', [self.image])
        self.compare_src = kw.get('compare_src')  # process: target must equal this (or one
                                                  # of these, a list)
        self.setup = kw.get('setup', [])        # commands run after the prefill
        self.src_raw = kw.get('src_raw')        # process: size of a random src.raw
        self.note = kw.get('note', '')

    def executors(self):
        return ['vtool', 'qemu'] if self.kind == 'script' else list(self.commands)


def _gen_ops(rng, n, make, flush_range=(3, 7), depth=1):
    """n ops from make(rng) -> (kind, off, len), with a flush every few ops. At depth > 1
    the ops between two flushes run at once: they are kept 4 KiB-page disjoint (a new op
    that overlaps the batch starts a new one)."""
    ops, batch_pages = [], set()
    until_flush = rng.randint(*flush_range)
    while sum(o.kind != 'flush' for o in ops) < n:
        kind, off, length = make(rng)
        pages = set(range(off // PAGE, (off + length - 1) // PAGE + 1))
        if depth > 1 and pages & batch_pages:
            ops.append(Op(len(ops), 'flush'))
            batch_pages = set()
            until_flush = rng.randint(*flush_range)
        ops.append(Op(len(ops), kind, off, length))
        batch_pages |= pages
        until_flush -= 1
        if until_flush <= 0:
            ops.append(Op(len(ops), 'flush'))
            batch_pages = set()
            until_flush = rng.randint(*flush_range)
    if rng.random() < 0.5 and ops[-1].kind != 'flush':
        ops.append(Op(len(ops), 'flush'))
    return ops


def wl_rand4k(cache, depth):
    def gen(seed, scale):
        rng = random.Random('rand4k:%d' % seed)
        vsize = 4 * MIB

        def make(r):
            return 'write', r.randrange(vsize // PAGE) * PAGE, PAGE
        n = int((40 if depth > 1 else 24) * scale)
        fr = (6, 12) if depth > 1 else (3, 7)
        return Workload('rand4k-%s-d%d' % ('wb' if cache == 'writeback' else 'none', depth),
                        cache=cache, depth=depth, vsize=vsize, seed=seed,
                        ops=_gen_ops(rng, n, make, fr, depth))
    return gen


def wl_unaligned(seed, scale):
    rng = random.Random('unaligned:%d' % seed)
    vsize = 4 * MIB

    def make(r):
        length = r.choice([r.randint(1, 4096), r.randint(4096, 70000), r.randint(65536, 200000)])
        off = r.randrange(vsize - length)
        return ('zero' if r.random() < 0.1 else 'write'), off, length
    return Workload('unaligned', vsize=vsize, seed=seed, ops=_gen_ops(rng, int(20 * scale), make))


def wl_overlay(seed, scale):
    rng = random.Random('overlay:%d' % seed)
    vsize, cs = 4 * MIB, 64 * KIB

    def make(r):
        c = r.randrange(vsize // cs)
        if r.random() < 0.5:
            off = c * cs + r.randrange(cs // SECTOR) * SECTOR
            length = r.randint(1, 24) * SECTOR
        else:
            off = c * cs + r.randrange(cs)
            length = r.randint(1, 12000)
        length = min(length, vsize - off)
        return 'write', off, length
    return Workload('overlay', vsize=vsize, seed=seed, backing=vsize,
                    ops=_gen_ops(rng, int(24 * scale), make),
                    note='qcow2 over a raw backing file; partial-cluster COW')


def wl_cs512(rbits):
    def gen(seed, scale):
        rng = random.Random('cs512-%d:%d' % (rbits, seed))
        vsize = 8 * MIB

        def make(r):
            length = r.randint(1, 16) * SECTOR
            return 'write', r.randrange((vsize - length) // SECTOR) * SECTOR, length
        # The prefill brings the host file close to 2 MiB: with refcount_bits=1 the run
        # then needs a new refcount block, with refcount_bits=64 a bigger refcount table.
        return Workload('cs512-rb%d' % rbits, vsize=vsize, seed=seed,
                        create_opts='cluster_size=512,refcount_bits=%d' % rbits,
                        prefill=['write -P 0x5a 0 1980k'],
                        ops=_gen_ops(rng, int(24 * scale), make))
    return gen


def wl_lazy(seed, scale):
    rng = random.Random('lazy:%d' % seed)
    vsize = 4 * MIB

    def make(r):
        length = r.choice([PAGE, r.randint(1, 64) * SECTOR, r.randint(64 * KIB, 160 * KIB)])
        return 'write', r.randrange((vsize - length) // SECTOR) * SECTOR, length
    return Workload('lazy', vsize=vsize, seed=seed, create_opts='lazy_refcounts=on',
                    ops=_gen_ops(rng, int(24 * scale), make))


def wl_discard(seed, scale):
    rng = random.Random('discard:%d' % seed)
    vsize, cs = 4 * MIB, 64 * KIB

    def make(r):
        x = r.random()
        if x < 0.35:
            n = r.randint(1, 4)
            return 'discard', r.randrange(vsize // cs - n + 1) * cs, n * cs
        if x < 0.75:
            n = r.randint(1, 3)
            return 'write', r.randrange(vsize // cs - n + 1) * cs, n * cs
        return 'write', r.randrange(vsize // PAGE) * PAGE, PAGE
    # Start with a few clusters written and flushed, so that discards free something.
    ops = [Op(i, 'write', i * 2 * cs, cs) for i in range(6)] + [Op(6, 'flush')]
    more = _gen_ops(rng, int(22 * scale), make)
    for o in more:
        o.idx += len(ops)
    return Workload('discard', vsize=vsize, seed=seed, ops=ops + more,
                    note='discard + rewrite: freed clusters are reused')


def wl_compressed(seed, scale):
    rng = random.Random('compressed:%d' % seed)
    vsize, cs = 4 * MIB, 64 * KIB
    used = set()

    def make(r):
        # Compressed writes go to clusters nothing wrote yet (qemu refuses a compressed
        # write over an allocated cluster); plain writes then land on compressed ones.
        free = [c for c in range(vsize // cs) if c not in used]
        if r.random() < 0.5 and free:
            c = r.choice(free)
            used.add(c)
            return 'wcomp', c * cs, cs
        length = r.choice([SECTOR, PAGE, 3 * PAGE])
        off = r.randrange((vsize - length) // PAGE) * PAGE
        used.update(range(off // cs, (off + length - 1) // cs + 1))
        return 'write', off, length
    return Workload('compressed', vsize=vsize, seed=seed,
                    ops=_gen_ops(rng, int(24 * scale), make),
                    note='compressed clusters, then plain writes over them')


def wl_convert(flags, name):
    def gen(seed, scale):
        cmd = ['{vtool}', 'img', 'convert'] + flags + ['-f', 'raw', '-O', 'qcow2',
                                                       'src.raw', 'dst.qcow2']
        return Workload(name, kind='process', seed=seed, src_raw=int(4 * MIB * scale),
                        image='dst.qcow2', judge=['dst.qcow2'], compare_src='src.raw',
                        commands={'vtool': cmd},
                        note='target written under a temporary name, renamed at the end')
    return gen


def wl_bench(cache):
    def gen(seed, scale):
        args = ['-w', '-f', 'qcow2', '-c', str(int(48 * scale)), '-d', '4', '-s', '4096',
                '-S', str(69632 + 4096 * (seed % 7)), '--flush-interval=6',
                '--pattern=%d' % (seed % 255 + 1), '-t', cache, 'img.qcow2']
        return Workload('bench-%s' % ('wb' if cache == 'writeback' else 'none'), kind='process',
                        seed=seed, cache=cache, vsize=4 * MIB,
                        commands={'vtool': ['{vtool}', 'img', 'bench'] + args,
                                  'qemu': ['qemu-img', 'bench', '-i', 'threads'] + args})
    return gen


# Commands that change qcow2 metadata in bulk, run one after another by sh under the
# shim; the image must read as it did before or after each of them (a list of raws).
SNAP_OPTS = ['', 'cluster_size=4k', 'cluster_size=512,refcount_bits=64', 'extended_l2=on',
             'compat=0.10']


def wl_snapshot(seed, scale):
    cmds = ['{vtool} img snapshot -c s1 img.qcow2', '{vtool} img snapshot -c s2 img.qcow2',
            '{vtool} img snapshot -d s1 img.qcow2', '{vtool} img snapshot -a old img.qcow2',
            '{vtool} img snapshot -d s2 img.qcow2', '{vtool} img snapshot -c s3 img.qcow2']
    qimg = lambda *a: ['qemu-img'] + list(a)
    return Workload('snapshot', kind='process', seed=seed, vsize=4 * MIB,
                    create_opts=SNAP_OPTS[seed % len(SNAP_OPTS)],
                    prefill=['write -P 0x41 0 2M', 'write -P 0x42 3M 512k'],
                    setup=[qimg('snapshot', '-c', 'old', 'img.qcow2'),
                           ['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x43 1M 1M', '-c',
                            'write -z 3M 64k', 'img.qcow2'],
                           qimg('convert', '-O', 'raw', 'img.qcow2', 'now.raw'),
                           qimg('convert', '-l', 'old', '-O', 'raw', 'img.qcow2', 'old.raw')],
                    commands={'vtool': ['sh', '-c', ' && '.join(cmds)]},
                    compare_src=['now.raw', 'old.raw'],
                    note='vtool img snapshot -c, -d, -a, -d, -c in a row (qemu-img has no '
                         'control here: its own order leaves states check calls corrupt)')


def wl_resize_grow(seed, scale):
    opts = SNAP_OPTS[seed % len(SNAP_OPTS)]
    cmds = ['{vtool} img resize -q img.qcow2 +3M',
            '{vtool} img resize -q --preallocation=metadata img.qcow2 9M',
            '{vtool} img resize -q --preallocation=full img.qcow2 +1M']
    # Over a longer backing file the new part must read as zeros (v2 cannot say so).
    return Workload('resize-grow', kind='process', seed=seed, vsize=4 * MIB, create_opts=opts,
                    backing=None if 'compat=0.10' in opts else 6 * MIB,
                    prefill=['write -P 0x51 0 1M', 'write -P 0x52 3M 1M'],
                    setup=[['qemu-img', 'convert', '-O', 'raw', 'img.qcow2', 'now.raw']],
                    commands={'vtool': ['sh', '-c', ' && '.join(cmds)]},
                    compare_src=['now.raw'],
                    note='vtool img resize: grows (over a longer backing file), with metadata '
                         'and full preallocation (no qemu-img control: its new size can be '
                         'durable before the zero clusters, showing the backing file)')


BITMAPS_SETUP = [['qemu-img', 'bitmap', '--add', 'img.qcow2', 'on'],
                 ['qemu-img', 'bitmap', '--add', '-g', '4096', '--disable', 'img.qcow2', 'off']]


def wl_bitmaps(seed, scale):
    rng = random.Random('bitmaps:%d' % seed)
    vsize = 4 * MIB

    def make(r):
        length = r.choice([PAGE, r.randint(1, 64) * SECTOR, r.randint(64 * KIB, 160 * KIB)])
        return 'write', r.randrange((vsize - length) // SECTOR) * SECTOR, length
    return Workload('bitmaps', vsize=vsize, seed=seed, setup=BITMAPS_SETUP,
                    ops=_gen_ops(rng, int(24 * scale), make),
                    note='writes to an image with persistent bitmaps: marked in use at '
                         'open, stored beside the old ones at close')


def wl_bitmap_cmds(seed, scale):
    cmds = ['{vtool} img bitmap --add img.qcow2 b2',
            '{vtool} img bitmap --merge on img.qcow2 b2',
            '{vtool} img bitmap --clear --disable img.qcow2 on',
            '{vtool} img bitmap --remove img.qcow2 off',
            '{vtool} img bitmap --remove --add img.qcow2 b2']
    return Workload('bitmap-cmds', kind='process', seed=seed, vsize=4 * MIB,
                    setup=BITMAPS_SETUP + [
                        ['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x61 %d 64k' % (seed * 64 * KIB),
                         '-c', 'write -P 0x62 2M 300k', 'img.qcow2'],
                        ['qemu-img', 'convert', '-O', 'raw', 'img.qcow2', 'now.raw']],
                    commands={'vtool': ['sh', '-c', ' && '.join(cmds)]},
                    compare_src=['now.raw'],
                    note='vtool img bitmap --add, --merge, --clear --disable, --remove in a row')


WORKLOADS = {
    'rand4k-wb-d1': wl_rand4k('writeback', 1),
    'rand4k-none-d1': wl_rand4k('none', 1),
    'rand4k-wb-d8': wl_rand4k('writeback', 8),
    'rand4k-none-d8': wl_rand4k('none', 8),
    'unaligned': wl_unaligned,
    'overlay': wl_overlay,
    'cs512-rb1': wl_cs512(1),
    'cs512-rb64': wl_cs512(64),
    'lazy': wl_lazy,
    'discard': wl_discard,
    'compressed': wl_compressed,
    'convert': wl_convert([], 'convert'),
    'convert-c': wl_convert(['-c'], 'convert-c'),
    'convert-wb': wl_convert(['-t', 'writeback'], 'convert-wb'),
    'bench-wb': wl_bench('writeback'),
    'bench-none': wl_bench('none'),
    'snapshot': wl_snapshot,
    'resize-grow': wl_resize_grow,
    'bitmaps': wl_bitmaps,
    'bitmap-cmds': wl_bitmap_cmds,
}


# ---------------------------------------------------------------------------------------
# run: prepare the initial files, copy them to a work dir and run the command under the
# shim.

def sh(argv, cwd=None, env=None, timeout=600):
    return subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)


def must(argv, cwd=None):
    r = sh(argv, cwd=cwd)
    if r.returncode != 0:
        raise RuntimeError('%s: exit %d: %s' % (' '.join(argv), r.returncode,
                                                r.stderr.decode(errors='replace')[:500]))
    return r


def read_raw(img, fmt='qcow2'):
    """The guest-visible bytes of an image (qemu-img convert -O raw)."""
    fd, tmp = tempfile.mkstemp(prefix='powercut-raw-', dir='/dev/shm' if os.path.isdir('/dev/shm') else None)
    os.close(fd)
    try:
        must(['qemu-img', 'convert', '-f', fmt, '-O', 'raw', img, tmp])
        with open(tmp, 'rb') as f:
            return f.read()
    finally:
        os.unlink(tmp)


def prepare(wl, pristine):
    """Create the workload's initial files in pristine/ (with qemu-img, so that both
    executors start from the same bytes)."""
    os.makedirs(pristine, exist_ok=True)
    rng = random.Random('files:%s:%d' % (wl.name, wl.seed))
    if wl.src_raw:
        with open(os.path.join(pristine, 'src.raw'), 'wb') as f:
            for _ in range(wl.src_raw // (64 * KIB)):
                f.write(rng.randbytes(64 * KIB) if rng.random() < 0.5 else bytes(64 * KIB))
        return
    create = ['qemu-img', 'create', '-q', '-f', 'qcow2']
    if wl.create_opts:
        create += ['-o', wl.create_opts]
    if wl.backing:
        with open(os.path.join(pristine, 'base.raw'), 'wb') as f:
            f.write(rng.randbytes(wl.backing))
        create += ['-b', 'base.raw', '-F', 'raw']
    must(create + [wl.image, str(wl.vsize)], cwd=pristine)
    for cmd in wl.prefill:
        must(['qemu-io', '-f', 'qcow2', wl.image, '-c', cmd], cwd=pristine)
    for argv in wl.setup:
        must(argv, cwd=pristine)


def run_under_shim(shim, wdir, argv, targets, readonly=()):
    """Copy wdir/pristine/* to wdir/run/, run argv there with the shim recording the
    files `targets` (relative to run/; '' = every file in run/), keep wdir/log and
    wdir/meta.json. Files in `readonly` are made read-only (backing files)."""
    pristine, run = os.path.join(wdir, 'pristine'), os.path.join(wdir, 'run')
    if os.path.exists(run):
        shutil.rmtree(run)
    os.makedirs(run)
    initial = {}
    for name in sorted(os.listdir(pristine)):
        dst = os.path.join(run, name)
        shutil.copyfile(os.path.join(pristine, name), dst)
        if name in readonly:
            os.chmod(dst, 0o444)
        st = os.stat(dst)
        initial[os.path.realpath(dst)] = [st.st_dev, st.st_ino]
    log = os.path.join(wdir, 'log')
    if os.path.exists(log):
        os.unlink(log)
    run_real = os.path.realpath(run)
    env = dict(os.environ)
    env['LD_PRELOAD'] = os.path.realpath(shim) + (':' + env['LD_PRELOAD'] if env.get('LD_PRELOAD') else '')
    env['POWERCUT_TARGET'] = ':'.join(run_real + '/' + t if t else run_real + '/' for t in targets)
    env['POWERCUT_LOG'] = os.path.realpath(log)
    t0 = time.time()
    r = sh(argv, cwd=run, env=env)
    meta = {'argv': argv, 'targets': list(targets), 'run_dir': run_real, 'initial': initial,
            'rc': r.returncode, 'stderr': r.stderr.decode(errors='replace')[-2000:],
            'seconds': round(time.time() - t0, 3)}
    with open(os.path.join(wdir, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=1)
    if not os.path.exists(log):
        open(log, 'wb').close()
    return meta


def executor_argv(wl, executor, tools, wdir):
    """The command line of one executor for a workload, to be run in wdir/run."""
    if wl.kind == 'process':
        return [a.replace('{vtool}', tools.get('vtool') or 'vtool') for a in wl.commands[executor]]
    script = os.path.join(wdir, 'script')
    with open(script, 'w') as f:
        f.write(format_script(wl.seed, wl.depth, wl.ops))
    if executor == 'vtool':
        return [tools['blkio'], 'script', wl.image, 'qcow2', script, wl.cache]
    # qemu-io runs the same ops one at a time (its aio_write cannot take a data file, so
    # "depth" is not reproduced): thread-pool I/O (-i threads), discards passed down.
    data = os.path.join(wdir, 'data')
    os.makedirs(data, exist_ok=True)
    argv = ['qemu-io', '-f', 'qcow2', '-i', 'threads', '-t', wl.cache, '-d', 'unmap', wl.image]
    for o in wl.ops:
        if o.kind in ('write', 'wcomp'):
            p = os.path.join(data, 'op%d' % o.idx)
            with open(p, 'wb') as f:
                f.write(op_data(wl.seed, o.idx, o.off, o.len, o.kind == 'wcomp'))
            argv += ['-c', 'write -q %s-s %s %d %d' % ('-c ' if o.kind == 'wcomp' else '', p, o.off, o.len)]
        elif o.kind == 'zero':
            argv += ['-c', 'write -q -z %d %d' % (o.off, o.len)]
        elif o.kind == 'discard':
            argv += ['-c', 'discard -q %d %d' % (o.off, o.len)]
        else:
            argv += ['-c', 'flush']
    return argv
