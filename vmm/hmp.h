/* HMP, qemu's text monitor: "(qemu) " prompts, one command a line (info status, info
 * block, info registers, stop, cont, system_powerdown, system_reset, quit, screendump,
 * help). Built on the QMP commands, as qemu's is. A session is fed bytes and writes
 * through its out callback; a session on a terminal echoes what is typed and handles
 * backspace (the terminal is raw). Output lines end in "\r\n", as qemu's do. */
#ifndef VTOOL_VMM_HMP_H
#define VTOOL_VMM_HMP_H

#include <stdbool.h>
#include <stddef.h>

#define HMP_LINE_MAX 1024

typedef void hmp_out_fn(void *opaque, const char *text, size_t len);

struct hmp_session {
	char line[HMP_LINE_MAX];
	size_t len;
	bool overflow, echo, last_cr;
	hmp_out_fn *out;
	void *opaque;
};

void hmp_session_init(struct hmp_session *s, bool echo, hmp_out_fn *out, void *opaque);
/* The banner and the first prompt. */
void hmp_session_greet(struct hmp_session *s);
void hmp_session_input(struct hmp_session *s, const char *data, size_t len);

/* Run one command line; its output, malloc'ed ("" for none), NULL without memory. */
char *hmp_run_line(const char *line);

#endif
