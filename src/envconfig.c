/* envconfig.c: a config from klipper-lb's environment variables (K3s svclb drop-in) */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "envconfig.h"

#define ENV_TEXT_MAX 8192 /* the generated INI text */
#define ENV_LIST_SEP ", \t"

static const char *env_get(char *const *envp, const char *name)
{
	size_t n = strlen(name);
	for (; envp != NULL && *envp != NULL; envp++)
		if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

bool envconfig_wanted(char *const *envp)
{
	return env_get(envp, "SRC_PORT") != NULL;
}

static struct config *fail(struct config_error *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static struct config *fail(struct config_error *err, const char *fmt, ...)
{
	va_list ap;
	memset(err, 0, sizeof(*err));
	snprintf(err->file, sizeof(err->file), "%s", ENVCONFIG_NAME);
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return NULL;
}

/* The backends: at most one address of each family. */
struct dests {
	char v4[INET_ADDRSTRLEN];
	char v6[INET6_ADDRSTRLEN];
};

/* Adds one address from variable var; returns 0, or -1 with *err set. */
static int add_dest(struct dests *d, const char *var, const char *ip, int want_family,
		    struct config_error *err)
{
	unsigned char buf[sizeof(struct in6_addr)];
	bool v6 = strchr(ip, ':') != NULL;

	if (want_family == AF_INET && v6) {
		fail(err, "%s: expected an IPv4 address: '%s'", var, ip);
		return -1;
	}
	if (want_family == AF_INET6 && !v6) {
		fail(err, "%s: expected an IPv6 address: '%s'", var, ip);
		return -1;
	}
	if (inet_pton(v6 ? AF_INET6 : AF_INET, ip, buf) != 1) {
		fail(err, "%s: bad %s address: '%s'", var, v6 ? "IPv6" : "IPv4", ip);
		return -1;
	}
	char *slot = v6 ? d->v6 : d->v4;
	size_t size = v6 ? sizeof(d->v6) : sizeof(d->v4);
	if (slot[0] != '\0') {
		fail(err, "%s: more than one %s address ('%s', '%s'): one backend per family",
		     var, v6 ? "IPv6" : "IPv4", slot, ip);
		return -1;
	}
	snprintf(slot, size, "%s", ip);
	return 0;
}

static int check_port(const char *var, const char *value, struct config_error *err)
{
	const char *why;
	uint16_t port;
	if (value == NULL) {
		fail(err, "%s: not set", var);
		return -1;
	}
	if (addr_parse_port(value, &port, &why) < 0) {
		fail(err, "%s: %s: '%s'", var, why, value);
		return -1;
	}
	return 0;
}

/* Copies a comma or blank separated list into items, one per call of fn. */
static int each_item(const char *var, const char *value, struct config_error *err,
		     int (*fn)(const char *var, const char *item, void *ctx,
			       struct config_error *err),
		     void *ctx)
{
	char *copy = strdup(value);
	char *save = NULL;
	int rc = 0;
	if (copy == NULL) {
		fail(err, "out of memory");
		return -1;
	}
	for (char *item = strtok_r(copy, ENV_LIST_SEP, &save); item != NULL && rc == 0;
	     item = strtok_r(NULL, ENV_LIST_SEP, &save))
		rc = fn(var, item, ctx, err);
	free(copy);
	return rc;
}

static int dest_item(const char *var, const char *item, void *ctx, struct config_error *err)
{
	return add_dest(ctx, var, item, AF_UNSPEC, err);
}

/* The generated INI text; overflow is remembered, not written. */
struct text {
	char buf[ENV_TEXT_MAX];
	size_t len;
	bool overflow;
	bool v4, v6; /* SRC_RANGES named a prefix of this family */
	size_t ranges; /* prefixes written */
};

static void appendf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void appendf(struct text *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(t->buf + t->len, sizeof(t->buf) - t->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(t->buf) - t->len)
		t->overflow = true;
	else
		t->len += (size_t)n;
}

static int range_item(const char *var, const char *item, void *ctx, struct config_error *err)
{
	struct text *t = ctx;
	struct cidr c;
	const char *why;
	if (cidr_parse(item, &c, &why) < 0) {
		fail(err, "%s: %s: '%s'", var, why, item);
		return -1;
	}
	if (++t->ranges > CIDR_MAX) {
		fail(err, "%s: too many ranges (at most %d)", var, CIDR_MAX);
		return -1;
	}
	appendf(t, "allow = %s\n", item);
	if (c.family == AF_INET)
		t->v4 = true;
	else
		t->v6 = true;
	return 0;
}

struct config *envconfig_load(char *const *envp, struct config_error *err)
{
	const char *src_port = env_get(envp, "SRC_PORT");
	const char *proto = env_get(envp, "DEST_PROTO");
	const char *dest_port = env_get(envp, "DEST_PORT");
	const char *dest_ips = env_get(envp, "DEST_IPS");
	const char *dest_ip = env_get(envp, "DEST_IP");
	const char *dest_ip6 = env_get(envp, "DEST_IP6");
	const char *src_ranges = env_get(envp, "SRC_RANGES");
	struct dests d = { "", "" };
	struct text t = { .len = 0 };

	if (check_port("SRC_PORT", src_port, err) < 0)
		return NULL;
	if (proto != NULL && proto[0] != '\0' && strcasecmp(proto, "TCP") != 0) {
		if (strcasecmp(proto, "UDP") == 0 || strcasecmp(proto, "SCTP") == 0)
			return fail(err, "DEST_PROTO: %s is not supported (only TCP)", proto);
		return fail(err, "DEST_PROTO: expected TCP: '%s'", proto);
	}
	if (check_port("DEST_PORT", dest_port, err) < 0)
		return NULL;
	if (dest_ips != NULL && dest_ips[0] != '\0') {
		if (each_item("DEST_IPS", dest_ips, err, dest_item, &d) < 0)
			return NULL;
	} else {
		if (dest_ip != NULL && dest_ip[0] != '\0' &&
		    add_dest(&d, "DEST_IP", dest_ip, AF_INET, err) < 0)
			return NULL;
		if (dest_ip6 != NULL && dest_ip6[0] != '\0' &&
		    add_dest(&d, "DEST_IP6", dest_ip6, AF_INET6, err) < 0)
			return NULL;
	}
	if (d.v4[0] == '\0' && d.v6[0] == '\0')
		return fail(err, "DEST_IPS: not set (nor DEST_IP or DEST_IP6)");
	appendf(&t, "[lb-tcp-%s]\nlisten = %s\n", src_port, src_port);
	if (d.v4[0] != '\0')
		appendf(&t, "backend4 = %s:%s\n", d.v4, dest_port);
	if (d.v6[0] != '\0')
		appendf(&t, "backend6 = [%s]:%s\n", d.v6, dest_port);
	if (src_ranges != NULL && src_ranges[0] != '\0') {
		if (each_item("SRC_RANGES", src_ranges, err, range_item, &t) < 0)
			return NULL;
		/* klipper-lb filtered only the families its ranges named */
		if (t.ranges + !t.v4 + !t.v6 > CIDR_MAX)
			return fail(err, "SRC_RANGES: too many ranges (at most %d with a "
				    "prefix of each family)", CIDR_MAX);
		if (!t.v4)
			appendf(&t, "allow = 0.0.0.0/0\n");
		if (!t.v6)
			appendf(&t, "allow = ::/0\n");
	}
	if (t.overflow)
		return fail(err, "SRC_RANGES: too many ranges");
	struct config *cfg = config_load_string(ENVCONFIG_NAME, t.buf, err);
	if (cfg == NULL)
		err->line = 0; /* the generated text's lines mean nothing to the user */
	return cfg;
}
