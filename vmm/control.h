/* vtool run as a managed process: the machine's run state as qemu names it, the
 * lifecycle commands monitors send (stop, cont, system_powerdown, system_reset, quit)
 * and the events they are told (STOP, RESUME, SHUTDOWN, RESET, POWERDOWN).
 *
 * One controller per process, living across boots: run.c hands it each new machine
 * (ctl_run) and acts on the stop reason it returns. Monitors (monitor.c) call the
 * commands from their own threads; a command takes the controller's lock, so it sees
 * either a machine or none (between boots), never one being torn down. */
#ifndef VTOOL_VMM_CONTROL_H
#define VTOOL_VMM_CONTROL_H

#include <stdbool.h>

#include "util/error.h"
#include "vmm/config.h"
#include "vmm/vm.h"

/* qemu's RunState names (query-status). */
enum ctl_state { CTL_PRELAUNCH, CTL_RUNNING, CTL_PAUSED, CTL_SHUTDOWN };

/* qemu's ShutdownCause, as SHUTDOWN and RESET events name it. */
enum ctl_cause {
	CTL_CAUSE_NONE,
	CTL_CAUSE_HOST_QMP_QUIT,          /* quit (QMP or HMP), C-a x */
	CTL_CAUSE_HOST_QMP_SYSTEM_RESET,  /* system_reset */
	CTL_CAUSE_HOST_SIGNAL,            /* SIGINT, SIGTERM, SIGHUP */
	CTL_CAUSE_GUEST_SHUTDOWN,         /* ACPI power-off */
	CTL_CAUSE_GUEST_RESET,            /* 0xcf9, keyboard controller, triple fault... */
};

struct ctl_event {
	const char *name;        /* "STOP", "RESUME", "SHUTDOWN", "RESET", "POWERDOWN" */
	bool has_cause;          /* SHUTDOWN, RESET: data {"guest": ..., "reason": ...} */
	bool guest;
	const char *reason;
};
typedef void ctl_event_fn(const struct ctl_event *ev);

void ctl_init(const struct vm_config *cfg);
/* Where events go (monitor.c); called with the controller's lock held. */
void ctl_set_event_sink(ctl_event_fn *fn);

/* run.c: run this boot of the machine until it ends and return why (as vm_run does),
 * the events sent. A machine whose state is not "running" starts with its vCPUs parked
 * (-S, or a reset while paused: qemu's prelaunch). With -no-shutdown a guest power-off
 * leaves the machine in the "shutdown" state until system_reset, quit or a signal. */
enum vm_stop ctl_run(struct vm *vm, struct vt_error *err);

/* The commands; 0 or -errno with err filled (qemu's messages). */
int ctl_stop(struct vt_error *err);
int ctl_cont(struct vt_error *err);
int ctl_powerdown(struct vt_error *err);
int ctl_reset(struct vt_error *err);
void ctl_quit(enum ctl_cause cause);

enum ctl_state ctl_state(void);
/* quit (or a signal) was asked for: vtool is ending. */
bool ctl_quitting(void);
const char *ctl_state_name(enum ctl_state s);
const struct vm_config *ctl_config(void);

/* The machine now running, locked against being torn down until ctl_vm_put (NULL
 * between boots: ctl_vm_put must still be called). */
struct vm *ctl_vm_get(void);
void ctl_vm_put(void);

#endif
