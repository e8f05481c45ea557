/* QMP, qemu's JSON monitor protocol (docs/interop/qmp-spec), one session per client.
 *
 * A session gets bytes (qmp_session_input) and hands back text through its send
 * callback. The byte stream is cut into top-level JSON values by a small framer that
 * only counts brackets outside strings (no parsing); each value, at most
 * QMP_MAX_MESSAGE bytes and QMP_MAX_DEPTH deep, is then parsed by jansson. Anything
 * else (bad JSON, a value too big or too deep, a non-object, an unknown command,
 * arguments of the wrong shape) gets qemu's error reply and the session goes on.
 * Commands run on the calling thread (the monitor thread). qmp_cmds.c holds them. */
#ifndef VTOOL_VMM_QMP_H
#define VTOOL_VMM_QMP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "vmm/control.h"

#define QMP_MAX_MESSAGE (1u << 20)
#define QMP_MAX_DEPTH   64

struct qmp_session;
typedef void qmp_send_fn(void *opaque, const char *text, size_t len);

struct qmp_session {
	bool negotiated, pretty;
	qmp_send_fn *send;
	void *opaque;
	/* the framer */
	char *buf;
	size_t len, cap;
	int depth;
	bool in_str, esc, scalar, skipping;
};

void qmp_session_init(struct qmp_session *s, bool pretty, qmp_send_fn *send, void *opaque);
void qmp_session_free(struct qmp_session *s);
/* The greeting, first thing a client reads. */
void qmp_session_greet(struct qmp_session *s);
void qmp_session_input(struct qmp_session *s, const char *data, size_t len);

/* An event as the wire carries it ({"timestamp": ..., "event": ..., "data": ...}\r\n),
 * malloc'ed. */
char *qmp_event_text(const struct ctl_event *ev, bool pretty);

/* --- for qmp_cmds.c and hmp.c ---------------------------------------------------- */

/* qemu's error classes. */
enum qmp_error_class { QMP_GENERIC_ERROR, QMP_COMMAND_NOT_FOUND, QMP_DEVICE_NOT_FOUND };

struct qmp_error {
	enum qmp_error_class cls;
	char desc[512];
};

int qmp_error_set(struct qmp_error *e, enum qmp_error_class cls, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* One command: its parameters ("name:s" string, ":i" integer, ":b" bool, ":a" array,
 * ":o" object; a leading '*' makes it optional) and its function, which returns the
 * "return" value (new reference) or NULL with e filled. */
struct qmp_command {
	const char *name;
	const char *params[6];
	json_t *(*fn)(json_t *args, struct qmp_error *e);
};

/* qmp_cmds.c */
const struct qmp_command *qmp_command_find(const char *name);
/* Names of every command, for query-commands (NULL-terminated walk by index). */
const char *qmp_command_name(size_t i);

/* qemu's name for drive i ("ide0-hd0", "virtio0", its id=). */
void qmp_drive_name(const struct vm_config *cfg, int i, char *buf, size_t len);

/* Run one command as a client would (arguments already checked against params); used
 * by hmp.c. */
json_t *qmp_run(const char *name, json_t *args, struct qmp_error *e);

#endif
