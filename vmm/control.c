/* The controller of vtool run as a managed process (control.h). qemu's semantics:
 *   stop        running -> paused (STOP); elsewhere nothing
 *   cont        paused/prelaunch -> running (RESUME); "shutdown" needs a reset first
 *   system_reset  the machine is rebuilt (RESET; with -no-reboot: SHUTDOWN, exit);
 *               a machine that was not running comes back in prelaunch
 *   system_powerdown  POWERDOWN, and the ACPI power button is pressed
 *   quit, C-a x, signals  SHUTDOWN, exit 0 */
#include <errno.h>
#include <pthread.h>

#include "vmm/control.h"
#include "vmm/hw/devices.h"

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;          /* the "shutdown" state waits here */
	const struct vm_config *cfg;
	enum ctl_state state;
	struct vm *vm;                /* NULL between boots */
	enum ctl_cause cause;         /* why a host command stopped the machine */
	bool quit, reset;             /* asked for while no machine ran (or in "shutdown") */
	enum ctl_cause quit_cause;
	ctl_event_fn *sink;
} ctl = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static const char *cause_name(enum ctl_cause c)
{
	switch (c) {
	case CTL_CAUSE_HOST_QMP_QUIT: return "host-qmp-quit";
	case CTL_CAUSE_HOST_QMP_SYSTEM_RESET: return "host-qmp-system-reset";
	case CTL_CAUSE_HOST_SIGNAL: return "host-signal";
	case CTL_CAUSE_GUEST_SHUTDOWN: return "guest-shutdown";
	case CTL_CAUSE_GUEST_RESET: return "guest-reset";
	case CTL_CAUSE_NONE: break;
	}
	return "none";
}

static void emit(const char *name)
{
	struct ctl_event ev = { .name = name };

	if (ctl.sink)
		ctl.sink(&ev);
}

static void emit_cause(const char *name, enum ctl_cause cause)
{
	struct ctl_event ev = { .name = name, .has_cause = true,
	                        .guest = cause == CTL_CAUSE_GUEST_SHUTDOWN ||
	                                 cause == CTL_CAUSE_GUEST_RESET,
	                        .reason = cause_name(cause) };

	if (ctl.sink)
		ctl.sink(&ev);
}

void ctl_init(const struct vm_config *cfg)
{
	pthread_mutex_lock(&ctl.lock);
	ctl.cfg = cfg;
	ctl.state = cfg->ctl.start_paused ? CTL_PRELAUNCH : CTL_RUNNING;
	pthread_mutex_unlock(&ctl.lock);
}

void ctl_set_event_sink(ctl_event_fn *fn)
{
	pthread_mutex_lock(&ctl.lock);
	ctl.sink = fn;
	pthread_mutex_unlock(&ctl.lock);
}

const struct vm_config *ctl_config(void)
{
	return ctl.cfg;
}

const char *ctl_state_name(enum ctl_state s)
{
	static const char *const names[] = { [CTL_PRELAUNCH] = "prelaunch",
	                                      [CTL_RUNNING] = "running",
	                                      [CTL_PAUSED] = "paused",
	                                      [CTL_SHUTDOWN] = "shutdown" };
	return names[s];
}

enum ctl_state ctl_state(void)
{
	pthread_mutex_lock(&ctl.lock);
	enum ctl_state s = ctl.state;
	pthread_mutex_unlock(&ctl.lock);
	return s;
}

bool ctl_quitting(void)
{
	pthread_mutex_lock(&ctl.lock);
	bool q = ctl.quit;
	pthread_mutex_unlock(&ctl.lock);
	return q;
}

struct vm *ctl_vm_get(void)
{
	pthread_mutex_lock(&ctl.lock);
	return ctl.vm;
}

void ctl_vm_put(void)
{
	pthread_mutex_unlock(&ctl.lock);
}

/* Undo every pause before the machine is torn down (its I/O threads must run to see
 * their stop request). */
static void release_pause(struct vm *vm)
{
	while (vm_paused(vm))
		vm_resume(vm);
}

/* -no-shutdown: the guest powered off; wait, devices quiet, for system_reset, quit or a
 * signal. Returns what to do next. Called and returns with the lock held. */
static enum vm_stop shutdown_state(struct vm *vm)
{
	ctl.state = CTL_SHUTDOWN;
	emit("STOP");
	vm_pause(vm);
	while (!ctl.quit && !ctl.reset)
		pthread_cond_wait(&ctl.cond, &ctl.lock);
	if (ctl.quit) {
		emit_cause("SHUTDOWN", ctl.quit_cause);
		return VM_STOP_QUIT;
	}
	ctl.reset = false;
	return VM_STOP_RESET; /* the RESET event was sent by the command */
}

enum vm_stop ctl_run(struct vm *vm, struct vt_error *err)
{
	pthread_mutex_lock(&ctl.lock);
	ctl.vm = vm;
	ctl.cause = CTL_CAUSE_NONE;
	ctl.reset = false;
	if (ctl.quit)
		vm_request_stop(vm, VM_STOP_QUIT, 0, NULL); /* a signal between boots */
	if (ctl.state != CTL_RUNNING)
		vm_pause(vm); /* vCPUs park as they start */
	pthread_mutex_unlock(&ctl.lock);

	enum vm_stop why = vm_run(vm, err);

	pthread_mutex_lock(&ctl.lock);
	bool was_running = ctl.state == CTL_RUNNING;
	enum ctl_cause host = ctl.cause;
	switch (why) {
	case VM_STOP_POWEROFF:
		emit_cause("SHUTDOWN", CTL_CAUSE_GUEST_SHUTDOWN);
		if (ctl.cfg->no_shutdown) {
			why = shutdown_state(vm);
			was_running = false;
		}
		break;
	case VM_STOP_RESET: {
		enum ctl_cause c = host == CTL_CAUSE_HOST_QMP_SYSTEM_RESET ? host
		                                                           : CTL_CAUSE_GUEST_RESET;
		emit_cause(ctl.cfg->no_reboot ? "SHUTDOWN" : "RESET", c);
		break;
	}
	case VM_STOP_QUIT:
		emit_cause("SHUTDOWN", ctl.quit ? ctl.quit_cause : CTL_CAUSE_HOST_SIGNAL);
		break;
	default:
		break; /* isa-debug-exit and errors end the process without events, as qemu */
	}
	/* A machine rebuilt after a reset runs only if this one was running (qemu). */
	if (why == VM_STOP_RESET && !was_running)
		ctl.state = CTL_PRELAUNCH;
	ctl.vm = NULL;
	ctl.cause = CTL_CAUSE_NONE;
	pthread_mutex_unlock(&ctl.lock);
	release_pause(vm);
	return why;
}

int ctl_stop(struct vt_error *err)
{
	(void)err;
	pthread_mutex_lock(&ctl.lock);
	if (ctl.state == CTL_RUNNING) {
		if (ctl.vm)
			vm_pause(ctl.vm);
		ctl.state = CTL_PAUSED;
		emit("STOP");
	}
	pthread_mutex_unlock(&ctl.lock);
	return 0;
}

int ctl_cont(struct vt_error *err)
{
	int ret = 0;

	pthread_mutex_lock(&ctl.lock);
	if (ctl.state == CTL_SHUTDOWN) {
		ret = vt_error_set(err, EINVAL, "", NULL, "Resetting the Virtual Machine is required");
	} else if (ctl.state != CTL_RUNNING) {
		if (ctl.vm)
			vm_resume(ctl.vm);
		ctl.state = CTL_RUNNING;
		emit("RESUME");
	}
	pthread_mutex_unlock(&ctl.lock);
	return ret;
}

int ctl_powerdown(struct vt_error *err)
{
	(void)err;
	pthread_mutex_lock(&ctl.lock);
	emit("POWERDOWN");
	if (ctl.vm)
		acpi_press_power_button(ctl.vm);
	pthread_mutex_unlock(&ctl.lock);
	return 0;
}

int ctl_reset(struct vt_error *err)
{
	(void)err;
	pthread_mutex_lock(&ctl.lock);
	if (ctl.state == CTL_SHUTDOWN && !ctl.cfg->no_reboot) {
		/* The machine already stopped: wake the "shutdown" state's wait. */
		emit_cause("RESET", CTL_CAUSE_HOST_QMP_SYSTEM_RESET);
		ctl.reset = true;
		pthread_cond_broadcast(&ctl.cond);
	} else if (ctl.state == CTL_SHUTDOWN) {
		ctl.quit = true;
		ctl.quit_cause = CTL_CAUSE_HOST_QMP_SYSTEM_RESET;
		pthread_cond_broadcast(&ctl.cond);
	} else if (ctl.vm) {
		if (ctl.cause == CTL_CAUSE_NONE)
			ctl.cause = CTL_CAUSE_HOST_QMP_SYSTEM_RESET;
		vm_request_stop(ctl.vm, VM_STOP_RESET, 0, NULL);
	}
	pthread_mutex_unlock(&ctl.lock);
	return 0;
}

void ctl_quit(enum ctl_cause cause)
{
	pthread_mutex_lock(&ctl.lock);
	if (!ctl.quit) {
		ctl.quit = true;
		ctl.quit_cause = cause;
	}
	if (ctl.vm)
		vm_request_stop(ctl.vm, VM_STOP_QUIT, 0, NULL);
	pthread_cond_broadcast(&ctl.cond);
	pthread_mutex_unlock(&ctl.lock);
}
