/* QMP sessions: framing, parsing with jansson, dispatch with qemu's checks and messages
 * (qemu's qapi/qmp-dispatch.c and monitor/qmp.c), events. See qmp.h. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vmm/qmp.h"

int qmp_error_set(struct qmp_error *e, enum qmp_error_class cls, const char *fmt, ...)
{
	va_list ap;

	e->cls = cls;
	va_start(ap, fmt);
	vsnprintf(e->desc, sizeof(e->desc), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static const char *class_name(enum qmp_error_class c)
{
	switch (c) {
	case QMP_COMMAND_NOT_FOUND: return "CommandNotFound";
	case QMP_DEVICE_NOT_FOUND: return "DeviceNotFound";
	case QMP_GENERIC_ERROR: break;
	}
	return "GenericError";
}

static size_t dump_flags(bool pretty)
{
	return JSON_ENSURE_ASCII | (pretty ? JSON_INDENT(4) : 0);
}

/* Send one JSON value, "\r\n"-terminated as qemu's monitor does. Takes obj. */
static void send_json(struct qmp_session *s, json_t *obj)
{
	char *text = obj ? json_dumps(obj, dump_flags(s->pretty)) : NULL;

	json_decref(obj);
	if (!text) {
		static const char oom[] = "{\"error\": {\"class\": \"GenericError\", \"desc\": "
		                          "\"out of memory\"}}\r\n";
		s->send(s->opaque, oom, sizeof(oom) - 1);
		return;
	}
	size_t n = strlen(text);
	char *line = realloc(text, n + 3);
	if (line) {
		memcpy(line + n, "\r\n", 3);
		s->send(s->opaque, line, n + 2);
	}
	free(line ? line : text);
}

static void send_error(struct qmp_session *s, json_t *id, const struct qmp_error *e)
{
	json_t *r = json_object();

	json_object_set_new(r, "error", json_pack("{s:s, s:s}", "class", class_name(e->cls),
	                                          "desc", e->desc));
	if (id)
		json_object_set(r, "id", id);
	send_json(s, r);
}

__attribute__((format(printf, 2, 3)))
static void send_generic(struct qmp_session *s, const char *fmt, ...)
{
	struct qmp_error e = { .cls = QMP_GENERIC_ERROR };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(e.desc, sizeof(e.desc), fmt, ap);
	va_end(ap);
	send_error(s, NULL, &e);
}

void qmp_session_init(struct qmp_session *s, bool pretty, qmp_send_fn *send, void *opaque)
{
	*s = (struct qmp_session){ .pretty = pretty, .send = send, .opaque = opaque };
}

void qmp_session_free(struct qmp_session *s)
{
	free(s->buf);
	s->buf = NULL;
	s->len = s->cap = 0;
}

static json_t *version_object(void)
{
	unsigned maj = 0, min = 0, mic = 0;

	sscanf(VTOOL_VERSION, "%u.%u.%u", &maj, &min, &mic);
	return json_pack("{s:{s:i, s:i, s:i}, s:s}", "qemu", "micro", (int)mic, "minor", (int)min,
	                 "major", (int)maj, "package", "vtool " VTOOL_VERSION);
}

void qmp_session_greet(struct qmp_session *s)
{
	/* No out-of-band execution: capabilities are empty. */
	send_json(s, json_pack("{s:{s:o, s:[]}}", "QMP", "version", version_object(),
	                       "capabilities"));
}

/* qmp_capabilities: the negotiation, handled per session. */
static json_t *capabilities(struct qmp_session *s, json_t *args, struct qmp_error *e)
{
	if (s->negotiated) {
		qmp_error_set(e, QMP_COMMAND_NOT_FOUND,
		              "Capabilities negotiation is already complete, command ignored");
		return NULL;
	}
	json_t *enable = json_object_get(args, "enable"), *cap;
	size_t i;
	json_array_foreach(enable, i, cap) {
		qmp_error_set(e, QMP_GENERIC_ERROR, "Capability '%s' not available",
		              json_is_string(cap) ? json_string_value(cap) : "?");
		return NULL;
	}
	s->negotiated = true;
	return json_object();
}

/* Check arguments against a command's parameter list (qemu's visitor messages). */
static int check_args(const struct qmp_command *c, json_t *args, struct qmp_error *e)
{
	const char *key;
	json_t *val;

	json_object_foreach(args, key, val) {
		bool known = false;
		for (int i = 0; i < 6 && c->params[i]; i++) {
			const char *p = c->params[i] + (c->params[i][0] == '*');
			size_t l = strcspn(p, ":");
			if (strlen(key) == l && !strncmp(p, key, l)) {
				known = true;
				char t = p[l + 1];
				bool ok = t == 's' ? json_is_string(val) : t == 'i' ? json_is_integer(val)
				        : t == 'b' ? json_is_boolean(val) : t == 'a' ? json_is_array(val)
				        : json_is_object(val);
				static const char *const tn[] = { ['s'] = "string", ['i'] = "integer",
				                                  ['b'] = "boolean", ['a'] = "array",
				                                  ['o'] = "object" };
				if (!ok)
					return qmp_error_set(e, QMP_GENERIC_ERROR, "Invalid parameter type "
					                     "for '%s', expected: %s", key, tn[(int)t]);
			}
		}
		if (!known)
			return qmp_error_set(e, QMP_GENERIC_ERROR, "Parameter '%s' is unexpected", key);
	}
	for (int i = 0; i < 6 && c->params[i]; i++) {
		char name[64];
		if (c->params[i][0] == '*')
			continue;
		snprintf(name, sizeof(name), "%.*s", (int)strcspn(c->params[i], ":"), c->params[i]);
		if (!json_object_get(args, name))
			return qmp_error_set(e, QMP_GENERIC_ERROR, "Parameter '%s' is missing", name);
	}
	return 0;
}

json_t *qmp_run(const char *name, json_t *args, struct qmp_error *e)
{
	const struct qmp_command *c = qmp_command_find(name);

	if (!c) {
		qmp_error_set(e, QMP_COMMAND_NOT_FOUND, "The command %s has not been found", name);
		return NULL;
	}
	if (check_args(c, args, e))
		return NULL;
	return c->fn(args, e);
}

static void dispatch(struct qmp_session *s, json_t *req)
{
	struct qmp_error e = { 0 };
	const char *key, *exec = NULL;
	json_t *val, *args = NULL, *ret = NULL;

	if (!json_is_object(req)) {
		send_generic(s, "QMP input must be a JSON object");
		return;
	}
	json_t *id = json_incref(json_object_get(req, "id"));
	json_object_del(req, "id");
	json_object_foreach(req, key, val) {
		if (!strcmp(key, "execute")) {
			if (!json_is_string(val)) {
				qmp_error_set(&e, QMP_GENERIC_ERROR, "QMP input member 'execute' must "
				              "be a string");
				goto out;
			}
			exec = json_string_value(val);
		} else if (!strcmp(key, "arguments")) {
			if (!json_is_object(val)) {
				qmp_error_set(&e, QMP_GENERIC_ERROR, "QMP input member 'arguments' must "
				              "be an object");
				goto out;
			}
			args = val;
		} else {
			qmp_error_set(&e, QMP_GENERIC_ERROR, "QMP input member '%s' is unexpected", key);
			goto out;
		}
	}
	if (!exec) {
		qmp_error_set(&e, QMP_GENERIC_ERROR, "QMP input lacks member 'execute'");
		goto out;
	}
	json_t *empty = args ? NULL : json_object();
	if (!strcmp(exec, "qmp_capabilities")) {
		const struct qmp_command cap = { "qmp_capabilities", { "*enable:a" }, NULL };
		if (!check_args(&cap, args ? args : empty, &e))
			ret = capabilities(s, args ? args : empty, &e);
	} else if (!s->negotiated) {
		qmp_error_set(&e, QMP_COMMAND_NOT_FOUND,
		              "Expecting capabilities negotiation with 'qmp_capabilities'");
	} else {
		ret = qmp_run(exec, args ? args : empty, &e);
	}
	json_decref(empty);
out:
	if (ret) {
		json_t *r = json_pack("{s:o}", "return", ret);
		if (id)
			json_object_set(r, "id", id);
		send_json(s, r);
	} else {
		send_error(s, id, &e);
	}
	json_decref(id);
}

static void handle_message(struct qmp_session *s, const char *msg, size_t len)
{
	json_error_t jerr;
	json_t *req = json_loadb(msg, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);

	if (!req) {
		send_generic(s, "JSON parse error, %s", jerr.text);
		return;
	}
	dispatch(s, req);
	json_decref(req);
}

static bool append(struct qmp_session *s, char c)
{
	if (s->len == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 256;
		char *b = realloc(s->buf, cap);
		if (!b)
			return false;
		s->buf = b;
		s->cap = cap;
	}
	s->buf[s->len++] = c;
	return true;
}

static void frame_reset(struct qmp_session *s)
{
	s->len = 0;
	s->depth = 0;
	s->in_str = s->esc = s->scalar = false;
	if (s->cap > 65536) { /* give back what one huge message took */
		free(s->buf);
		s->buf = NULL;
		s->cap = 0;
	}
}

/* A message went over a limit: say so, then skip the rest of it (the framer keeps
 * counting brackets, so the next message is found again). */
static void frame_overflow(struct qmp_session *s, const char *why)
{
	send_generic(s, "JSON parse error, %s", why);
	int depth = s->depth;
	bool in_str = s->in_str, esc = s->esc;
	frame_reset(s);
	s->skipping = depth > 0 || in_str;
	s->depth = depth;
	s->in_str = in_str;
	s->esc = esc;
}

void qmp_session_input(struct qmp_session *s, const char *data, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = data[i];
		if (s->skipping) {
			bool done = false;
			if (s->in_str) {
				if (s->esc)
					s->esc = false;
				else if (c == '\\')
					s->esc = true;
				else if (c == '"')
					done = !(s->in_str = false) && s->depth <= 0;
			} else if (c == '"') {
				s->in_str = true;
			} else if (c == '{' || c == '[') {
				s->depth++;
			} else if (c == '}' || c == ']') {
				done = --s->depth <= 0;
			}
			if (done) {
				frame_reset(s);
				s->skipping = false;
			}
			continue;
		}
		if (s->len == 0) {
			/* Between messages: whitespace, a container, a string or a bare scalar. */
			if (isspace((unsigned char)c))
				continue;
			if (c == '}' || c == ']') {
				send_generic(s, "JSON parse error, unexpected '%s'", c == '}' ? "}" : "]");
				continue;
			}
			s->scalar = c != '{' && c != '[';
		} else if (s->scalar && !s->in_str &&
		           (isspace((unsigned char)c) || strchr("{}[],:\"", c))) {
			/* A bare scalar ends where a token would: handle it, then look at c again. */
			handle_message(s, s->buf, s->len);
			frame_reset(s);
			i--;
			continue;
		}
		if (s->len >= QMP_MAX_MESSAGE) {
			frame_overflow(s, "message larger than 1 MiB");
			if (s->skipping)
				i--; /* c belongs to the message being skipped */
			continue;
		}
		if (!append(s, c)) {
			frame_overflow(s, "out of memory");
			continue;
		}
		if (s->in_str) {
			if (s->esc)
				s->esc = false;
			else if (c == '\\')
				s->esc = true;
			else if (c == '"')
				s->in_str = false;
			if (!s->in_str && s->scalar) {
				handle_message(s, s->buf, s->len); /* a top-level string */
				frame_reset(s);
			}
			continue;
		}
		if (c == '"') {
			s->in_str = true;
		} else if (c == '{' || c == '[') {
			if (++s->depth > QMP_MAX_DEPTH)
				frame_overflow(s, "nesting deeper than 64 levels");
		} else if (c == '}' || c == ']') {
			if (--s->depth == 0) {
				handle_message(s, s->buf, s->len);
				frame_reset(s);
			}
		}
	}
}

char *qmp_event_text(const struct ctl_event *ev, bool pretty)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	json_t *o = json_pack("{s:{s:I, s:I}, s:s}", "timestamp", "seconds", (json_int_t)ts.tv_sec,
	                      "microseconds", (json_int_t)(ts.tv_nsec / 1000), "event", ev->name);
	if (o && ev->has_cause)
		json_object_set_new(o, "data", json_pack("{s:b, s:s}", "guest", ev->guest,
		                                         "reason", ev->reason));
	char *text = o ? json_dumps(o, dump_flags(pretty)) : NULL;
	json_decref(o);
	if (!text)
		return NULL;
	size_t n = strlen(text);
	char *line = realloc(text, n + 3);
	if (!line) {
		free(text);
		return NULL;
	}
	memcpy(line + n, "\r\n", 3);
	return line;
}
