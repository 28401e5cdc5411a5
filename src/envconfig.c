/* envconfig.c: a config from klipper-lb's environment variables (K3s svclb drop-in) */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "envconfig.h"
#include "parse.h"
#include "text.h"

/* K3s gives a svclb pod Kubernetes' default grace period (30 s) between
 * SIGTERM and SIGKILL: the drain ends well before it. */
#define ENV_DRAIN_TIMEOUT "25s"

static const char *env_get(char *const *envp, const char *name)
{
	size_t n = strlen(name);
	for (; envp != NULL && *envp != NULL; envp++)
		if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

/* A variable that is set to something other than blanks. */
static const char *env_value(char *const *envp, const char *name)
{
	const char *v = env_get(envp, name);
	return v != NULL && v[strspn(v, PARSE_LIST_SEP)] != '\0' ? v : NULL;
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

#define IP_TEXT_MAX (INET6_ADDRSTRLEN + IF_NAMESIZE) /* with a %scope */

/* What one list variable is parsed into, and where its errors go. */
struct env_list {
	const char *var;
	int want_family;         /* DEST_*: AF_INET6 for DEST_IP6, else AF_UNSPEC */
	char v4[IP_TEXT_MAX];    /* DEST_*: the backend of each family, "" if none */
	char v6[IP_TEXT_MAX];
	const char *v4_var, *v6_var; /* the variables they came from */
	struct text *allow;      /* SRC_RANGES: "allow = ..." lines */
	size_t ranges;
	struct config_error *err;
};

/* One address of DEST_IPS, DEST_IP or DEST_IP6. */
static int dest_item(const char *ip, void *ctx)
{
	struct env_list *l = ctx;
	struct addr a;
	const char *why;
	bool v6 = strchr(ip, ':') != NULL;

	if (l->want_family == AF_INET6 && !v6) {
		fail(l->err, "%s: expected an IPv6 address: '%s'", l->var, ip);
		return -1;
	}
	/* as klipper-lb's iptables rule: no interface (%scope) is taken */
	if (strchr(ip, '%') != NULL || addr_parse_ip(ip, &a, &why) < 0) {
		fail(l->err, "%s: bad %s address: '%s'", l->var, v6 ? "IPv6" : "IPv4", ip);
		return -1;
	}
	if (addr_is_link_local(&a))
		why = "a link-local address is not a backend here (no interface can be given)";
	else
		why = addr_backend_problem(&a);
	if (why != NULL) {
		fail(l->err, "%s: %s: '%s'", l->var, why, ip);
		return -1;
	}
	char *slot = v6 ? l->v6 : l->v4;
	size_t size = v6 ? sizeof(l->v6) : sizeof(l->v4);
	if (slot[0] != '\0') {
		fail(l->err, "%s: more than one %s address ('%s', '%s'): one backend per family",
		     l->var, v6 ? "IPv6" : "IPv4", slot, ip);
		return -1;
	}
	snprintf(slot, size, "%s", ip);
	*(v6 ? &l->v6_var : &l->v4_var) = l->var;
	return 0;
}

/* One prefix of SRC_RANGES; host bits are masked, as iptables does. */
static int range_item(const char *item, void *ctx)
{
	struct env_list *l = ctx;
	struct cidr c;
	bool masked;
	const char *why;
	char net[ADDR_STRLEN];

	if (cidr_parse_masking(item, &c, &masked, &why) < 0) {
		fail(l->err, "%s: %s: '%s'", l->var, why, item);
		return -1;
	}
	if (++l->ranges > CIDR_MAX) {
		fail(l->err, "%s: too many ranges (at most %d)", l->var, CIDR_MAX);
		return -1;
	}
	cidr_format(&c, net);
	if (masked)
		log_warn("%s: '%s' has host bits set: using %s", l->var, item, net);
	text_printf(l->allow, "allow = %s\n", net);
	return 0;
}

/* Parses a list variable; returns 0, or -1 with *err set. */
static int parse_var(struct env_list *l, const char *value, int (*fn)(const char *, void *))
{
	const char *why;
	if (parse_list(value, fn, l, &why) < 0) {
		if (why != NULL)
			fail(l->err, "%s: %s", l->var, why);
		return -1;
	}
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

/* DEST_PROTO: TCP when unset. Returns the protocol's name in lower case
 * (for the service name and its protocol key), or NULL with *err set. */
static const char *check_proto(const char *proto, struct config_error *err)
{
	if (proto == NULL || strcasecmp(proto, "TCP") == 0)
		return "tcp";
	if (strcasecmp(proto, "UDP") == 0)
		return "udp";
	if (strcasecmp(proto, "SCTP") == 0) {
		fail(err, "DEST_PROTO: SCTP is not supported (dualproxy relays TCP and UDP)");
		return NULL;
	}
	fail(err, "DEST_PROTO: expected TCP or UDP: '%s'", proto);
	return NULL;
}

/* The backends: DEST_IPS, else DEST_IP (either family) and DEST_IP6. */
static int parse_dests(char *const *envp, struct env_list *d)
{
	const char *dest_ips = env_value(envp, "DEST_IPS");
	const char *dest_ip = env_value(envp, "DEST_IP");
	const char *dest_ip6 = env_value(envp, "DEST_IP6");

	if (dest_ips != NULL) {
		d->var = "DEST_IPS";
		return parse_var(d, dest_ips, dest_item);
	}
	d->var = "DEST_IP";
	if (dest_ip != NULL && parse_var(d, dest_ip, dest_item) < 0)
		return -1;
	d->var = "DEST_IP6";
	d->want_family = AF_INET6;
	if (dest_ip6 != NULL && parse_var(d, dest_ip6, dest_item) < 0)
		return -1;
	return 0;
}

/* The variables each line of the generated text comes from (0: none). */
#define TEXT_LINES_MAX (5 + 2 + CIDR_MAX)

struct env_text {
	struct text t;
	unsigned lines;                     /* lines written so far */
	const char *var[TEXT_LINES_MAX + 1]; /* by line number */
};

static void add_line(struct env_text *e, const char *var, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void add_line(struct env_text *e, const char *var, const char *fmt, ...)
{
	char line[PARSE_ITEM_MAX + 64];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	text_printf(&e->t, "%s\n", line);
	if (++e->lines <= TEXT_LINES_MAX)
		e->var[e->lines] = var;
}

/* The INI text of the service, with the variable of each line in *e. */
static char *make_text(char *const *envp, struct env_text *e, struct config_error *err)
{
	const char *src_port = env_get(envp, "SRC_PORT");
	const char *dest_port = env_get(envp, "DEST_PORT");
	const char *src_ranges = env_value(envp, "SRC_RANGES");
	struct env_list d = { .err = err };
	struct env_list r = { .var = "SRC_RANGES", .err = err };
	char listen[2 * (ADDR_STRLEN + 1)] = "";

	const char *proto = check_proto(env_value(envp, "DEST_PROTO"), err);
	if (check_port("SRC_PORT", src_port, err) < 0 || proto == NULL ||
	    check_port("DEST_PORT", dest_port, err) < 0 || parse_dests(envp, &d) < 0)
		return NULL;
	if (d.v4[0] == '\0' && d.v6[0] == '\0') {
		fail(err, "DEST_IPS: not set (nor DEST_IP or DEST_IP6)");
		return NULL;
	}
	struct text allow = { 0 };
	r.allow = &allow;
	if (src_ranges != NULL && parse_var(&r, src_ranges, range_item) < 0) {
		text_free(&allow);
		return NULL;
	}

	/* Like klipper-lb, only the families that have a destination are
	 * published, and SRC_RANGES, when set, is the whole allowlist: a family
	 * it names no prefix of is refused. */
	add_line(e, NULL, "[global]");
	add_line(e, NULL, "drain_timeout = %s", ENV_DRAIN_TIMEOUT);
	add_line(e, NULL, "[lb-%s-%s]", proto, src_port);
	add_line(e, "DEST_PROTO", "protocol = %s", proto);
	if (d.v4[0] != '\0')
		snprintf(listen, sizeof(listen), " 0.0.0.0:%s", src_port);
	if (d.v6[0] != '\0')
		snprintf(listen + strlen(listen), sizeof(listen) - strlen(listen), " [::]:%s",
			 src_port);
	add_line(e, "SRC_PORT", "listen =%s", listen);
	if (d.v4[0] != '\0')
		add_line(e, d.v4_var, "backend4 = %s:%s", d.v4, dest_port);
	if (d.v6[0] != '\0')
		add_line(e, d.v6_var, "backend6 = [%s]:%s", d.v6, dest_port);
	for (char *line = allow.buf, *nl; line != NULL && *line != '\0'; line = nl + 1) {
		nl = strchr(line, '\n');
		*nl = '\0';
		add_line(e, "SRC_RANGES", "%s", line);
	}
	text_free(&allow);
	char *text = text_take(&e->t, NULL);
	if (text == NULL)
		fail(err, "out of memory");
	return text;
}

char *envconfig_text(char *const *envp, struct config_error *err)
{
	struct env_text e = { .lines = 0 };
	return make_text(envp, &e, err);
}

/* Loads the generated text; an error names the variable of its line. */
static struct config *load_text(char *text, const struct env_text *e, struct config_error *err)
{
	struct config *cfg = config_load_text(ENVCONFIG_NAME, text, strlen(text), err);
	if (cfg != NULL)
		return cfg;
	const char *var = err->line <= TEXT_LINES_MAX ? e->var[err->line] : NULL;
	err->line = 0; /* the generated text's lines mean nothing to the user */
	size_t n = var != NULL ? strlen(var) + 2 : 0; /* "VAR: " before the message */
	if (n > 0 && n < sizeof(err->msg)) {
		memmove(err->msg + n, err->msg, sizeof(err->msg) - n - 1);
		memcpy(err->msg, var, n - 2);
		memcpy(err->msg + n - 2, ": ", 2);
		err->msg[sizeof(err->msg) - 1] = '\0';
	}
	return NULL;
}

struct config *envconfig_load_text(char *text, struct config_error *err)
{
	struct env_text e = { .lines = 0 };
	return load_text(text, &e, err);
}

struct config *envconfig_load(char *const *envp, struct config_error *err)
{
	struct env_text e = { .lines = 0 };
	char *text = make_text(envp, &e, err);
	struct config *cfg = text != NULL ? load_text(text, &e, err) : NULL;
	if (cfg != NULL && env_value(envp, "SRC_RANGES") == NULL)
		log_info("SRC_RANGES not set or empty: clients from every address are served");
	return cfg;
}
