/* -smp [cpus=]N[,maxcpus=M][,sockets=S][,dies=D][,cores=C][,threads=T] with qemu's rules
 * for the pc machine (hw/core/machine-smp.c, 7.2 and later): omitted members are
 * computed preferring cores over sockets, the product of the hierarchy must equal
 * maxcpus, and the messages are qemu's. pc knows dies but not clusters. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vmm/options.h"

#define SMP_MACHINE "pc"

int vm_max_vcpus(void)
{
	return VM_MAX_VCPUS;
}

static void topo_string(char *buf, size_t len, unsigned s, unsigned d, unsigned c,
                        unsigned t)
{
	snprintf(buf, len, "sockets (%u) * dies (%u) * cores (%u) * threads (%u)", s, d, c, t);
}

int opt_smp_parse(struct vm_config *cfg, char *arg, struct vt_error *err)
{
	struct kv kv[MAX_KV];
	enum { CPUS, MAXCPUS, SOCKETS, DIES, CLUSTERS, CORES, THREADS, NKEYS };
	static const char *const keys[NKEYS] = { "cpus", "maxcpus", "sockets", "dies",
	                                         "clusters", "cores", "threads" };
	unsigned long val[NKEYS] = { 0 };
	bool has[NKEYS] = { false };
	int n = kv_split(arg, "cpus", kv);

	if (n < 0)
		return bad(err, "-smp", "too many parameters");
	for (int i = 0; i < n; i++) {
		int k = 0;
		while (k < NKEYS && strcmp(kv[i].key, keys[k]))
			k++;
		if (k == NKEYS)
			return bad(err, "-smp", "Invalid parameter '%s'", kv[i].key);
		if (parse_uint(kv[i].val, 0xffffffffu, &val[k]))
			return bad(err, "-smp", "Parameter '%s' expects a number", kv[i].key);
		has[k] = true;
	}
	for (int k = 0; k < NKEYS; k++)
		if (has[k] && val[k] == 0)
			return bad(err, "-smp", "Invalid CPU topology: CPU topology parameters must "
			           "be greater than zero");
	if (has[CLUSTERS] && val[CLUSTERS] > 1)
		return bad(err, "-smp", "clusters > 1 not supported by this machine's CPU topology");

	/* 32-bit products: the values are bounded by qemu's own uint32 arithmetic. */
	unsigned cpus = (unsigned)val[CPUS], maxcpus = (unsigned)val[MAXCPUS];
	unsigned sockets = (unsigned)val[SOCKETS], cores = (unsigned)val[CORES];
	unsigned threads = (unsigned)val[THREADS];
	unsigned dies = has[DIES] ? (unsigned)val[DIES] : 1;
	if (cpus == 0 && maxcpus == 0) {
		sockets = sockets ? sockets : 1;
		cores = cores ? cores : 1;
		threads = threads ? threads : 1;
	} else {
		maxcpus = maxcpus ? maxcpus : cpus;
		if (cores == 0) {
			sockets = sockets ? sockets : 1;
			threads = threads ? threads : 1;
			cores = maxcpus / (sockets * dies * threads);
		} else if (sockets == 0) {
			threads = threads ? threads : 1;
			sockets = maxcpus / (dies * cores * threads);
		}
		if (threads == 0)
			threads = maxcpus / (sockets * dies * cores);
	}
	unsigned long long total = (unsigned long long)sockets * dies * cores * threads;
	maxcpus = maxcpus ? maxcpus : (unsigned)(total > 0xffffffffu ? 0xffffffffu : total);
	cpus = cpus ? cpus : maxcpus;
	char hier[160];
	topo_string(hier, sizeof(hier), sockets, dies, cores, threads);
	if (total != maxcpus)
		return vt_error_set(err, EINVAL, "-smp", NULL, "Invalid CPU topology: product of "
		                    "the hierarchy must match maxcpus: %s != maxcpus (%u)", hier,
		                    maxcpus);
	if (maxcpus < cpus)
		return vt_error_set(err, EINVAL, "-smp", NULL, "Invalid CPU topology: maxcpus must "
		                    "be equal to or greater than smp: %s == maxcpus (%u) < smp_cpus "
		                    "(%u)", hier, maxcpus, cpus);
	if (maxcpus > (unsigned)vm_max_vcpus())
		return vt_error_set(err, EINVAL, "-smp", NULL, "Invalid SMP CPUs %u. The max CPUs "
		                    "supported by machine '%s' is %d", maxcpus, SMP_MACHINE,
		                    vm_max_vcpus());
	if (maxcpus > cpus)
		return vt_error_set(err, ENOTSUP, "-smp", NULL, "not supported yet: maxcpus=%u "
		                    "above cpus=%u (CPU hot-plug)", maxcpus, cpus);
	cfg->nr_vcpus = (int)cpus;
	cfg->topo = (struct vm_topology){ .sockets = (int)sockets, .dies = (int)dies,
	                                  .cores = (int)cores, .threads = (int)threads,
	                                  .max_cpus = (int)maxcpus };
	return 0;
}
