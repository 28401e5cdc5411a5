/* config.c: load the INI file (inih) into a validated config snapshot */
#include "autoconfig.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <ini.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "hashtab.h"
#include "parse.h"

#define GLOBAL_SECTION "global"
#define MAX_CONNECTIONS_LIMIT 10000000UL

/* Where the reader takes its lines from: bytes in memory. */
struct source {
	const char *text;
	const char *end;
};

/* ---- indexes: hashed, so that checking n services costs O(n) ---- */

#define INDEX_CHUNK 512 /* entries allocated at once */

enum { PROTO_TCP, PROTO_UDP, PROTO_COUNT };

/* One service name or listen address in an index. */
struct entry {
	struct hnode node;
	const struct service *svc;  /* NULL: metrics_listen */
	const struct addr *addr;    /* listen indexes */
	unsigned line;              /* where it was given */
	unsigned seq;               /* order of insertion (file order) */
	unsigned char proto;        /* listen indexes: PROTO_TCP or PROTO_UDP */
};

struct entry_chunk {
	struct entry_chunk *next;
	size_t used;
	struct entry e[INDEX_CHUNK];
};

/* Entries and the tables they are in; everything is freed at once. */
struct index {
	struct htab by_key;         /* names; listen: by protocol and address */
	struct htab by_port;        /* listen: the first entry per protocol, family and port */
	struct entry_chunk *chunks;
	unsigned seq;
};

/* What the reader and the handler share while one file is parsed. */
struct parse_state {
	struct config *cfg;
	struct source src;
	unsigned line;            /* line most recently handed to inih */
	bool in_global;           /* current section is [global] */
	bool in_section;          /* a section header has been seen */
	struct service *cur;      /* current service section, or NULL */
	struct service **tail;    /* where the next service is linked */
	unsigned seen;            /* keys already set in this section (bit per key) */
	bool has_key;             /* a key was seen since the last header */
	unsigned global_line;     /* line of the [global] header, 0 if none */
	unsigned metrics_line;    /* line of metrics_listen */
	const char *key;          /* the key whose list is being parsed */
	struct index names;       /* the services by name */
	struct addr *local;       /* this host's addresses, once they were asked for */
	size_t n_local;
	bool have_local;
	struct config_error *err;
	bool failed;
};

static struct entry *index_new(struct index *ix)
{
	struct entry_chunk *c = ix->chunks;
	if (c == NULL || c->used == INDEX_CHUNK) {
		c = malloc(sizeof(*c));
		if (c == NULL)
			return NULL;
		c->next = ix->chunks;
		c->used = 0;
		ix->chunks = c;
	}
	struct entry *e = &c->e[c->used++];
	memset(e, 0, sizeof(*e));
	e->seq = ix->seq++;
	return e;
}

static void index_free(struct index *ix)
{
	while (ix->chunks != NULL) {
		struct entry_chunk *next = ix->chunks->next;
		free(ix->chunks);
		ix->chunks = next;
	}
	htab_free(&ix->by_key);
	htab_free(&ix->by_port);
}

static bool entry_name_is(const struct hnode *n, const void *name)
{
	return strcmp(((const struct entry *)n)->svc->name, name) == 0;
}

/* What a listen entry is looked up by. */
struct listen_key {
	unsigned char proto;
	const struct addr *addr;
};

static uint64_t hash_listen_addr(unsigned char proto, const struct addr *a)
{
	unsigned char key[1 + ADDR_KEY_MAX];
	key[0] = proto;
	return htab_hash(key, 1 + addr_key(a, key + 1));
}

static uint64_t hash_listen_port(unsigned char proto, const struct addr *a)
{
	uint16_t port = addr_port(a);
	unsigned char key[4] = { proto, (unsigned char)addr_family(a), (unsigned char)(port >> 8),
				 (unsigned char)port };
	return htab_hash(key, sizeof(key));
}

static bool entry_addr_is(const struct hnode *n, const void *k)
{
	const struct entry *e = (const struct entry *)n;
	const struct listen_key *key = k;
	return e->proto == key->proto && addr_equal(e->addr, key->addr);
}

static bool entry_port_is(const struct hnode *n, const void *k)
{
	const struct entry *e = (const struct entry *)n;
	const struct listen_key *key = k;
	return e->proto == key->proto && addr_family(e->addr) == addr_family(key->addr) &&
	       addr_port(e->addr) == addr_port(key->addr);
}

static const struct entry *find_addr(const struct index *ix, unsigned char proto,
				     const struct addr *a)
{
	struct listen_key k = { proto, a };
	return (const struct entry *)htab_find(&ix->by_key, hash_listen_addr(proto, a),
					       entry_addr_is, &k);
}

static const struct entry *find_port(const struct index *ix, unsigned char proto,
				     const struct addr *a)
{
	struct listen_key k = { proto, a };
	return (const struct entry *)htab_find(&ix->by_port, hash_listen_port(proto, a),
					       entry_port_is, &k);
}

/* The earliest indexed address that a (of protocol proto) cannot be bound
 * next to (see addr_overlaps), or NULL: only the same address, or the
 * wildcard of its port; for a wildcard, anything on its port. */
static const struct entry *listen_conflict(const struct index *ix, unsigned char proto,
					   const struct addr *a)
{
	if (addr_is_wildcard(a))
		return find_port(ix, proto, a);
	const struct entry *same = find_addr(ix, proto, a);
	struct addr any = addr_wildcard(addr_family(a), addr_port(a));
	const struct entry *wild = find_addr(ix, proto, &any);
	if (same == NULL || (wild != NULL && wild->seq < same->seq))
		return wild;
	return same;
}

/* Adds a listen address; returns 0, or -1 when out of memory. */
static int listen_add(struct index *ix, unsigned char proto, const struct service *svc,
		      const struct addr *a, unsigned line)
{
	struct entry *e = index_new(ix);
	if (e == NULL)
		return -1;
	e->svc = svc;
	e->addr = a;
	e->line = line;
	e->proto = proto;
	if (htab_insert(&ix->by_key, &e->node, hash_listen_addr(proto, a)) < 0)
		return -1;
	if (find_port(ix, proto, a) != NULL)
		return 0;
	struct entry *first = index_new(ix);
	if (first == NULL)
		return -1;
	*first = *e;
	return htab_insert(&ix->by_port, &first->node, hash_listen_port(proto, a));
}

static void fail(struct parse_state *st, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void fail(struct parse_state *st, unsigned line, const char *fmt, ...)
{
	va_list ap;

	if (st->failed)
		return; /* the first error is the one reported */
	st->failed = true;
	st->err->line = line;
	va_start(ap, fmt);
	vsnprintf(st->err->msg, sizeof(st->err->msg), fmt, ap);
	va_end(ap);
}

/* ---- keys ---- */

struct key {
	const char *name;
	bool repeatable;  /* may appear more than once; each adds to the value */
	/* returns 0, or -1 after calling fail() */
	int (*set)(struct parse_state *st, const char *key, const char *value);
};

static int set_duration(struct parse_state *st, const char *key, const char *value,
			double *out)
{
	const char *why;
	if (parse_duration(value, out, &why) < 0) {
		fail(st, st->line, "%s: %s: '%s'", key, why, value);
		return -1;
	}
	return 0;
}

static int g_max_connections(struct parse_state *st, const char *key, const char *value)
{
	const char *why;
	if (parse_uint(value, 1, MAX_CONNECTIONS_LIMIT, &st->cfg->max_connections, &why) < 0) {
		fail(st, st->line, "%s: %s (1-%lu): '%s'", key, why,
		     MAX_CONNECTIONS_LIMIT, value);
		return -1;
	}
	return 0;
}

static int g_max_connections_per_source(struct parse_state *st, const char *key,
					const char *value)
{
	const char *why;
	if (parse_uint(value, 0, MAX_CONNECTIONS_LIMIT, &st->cfg->max_connections_per_source,
		       &why) < 0) {
		fail(st, st->line, "%s: %s (0-%lu): '%s'", key, why, MAX_CONNECTIONS_LIMIT,
		     value);
		return -1;
	}
	return 0;
}

static int g_connect_timeout(struct parse_state *st, const char *key, const char *value)
{
	return set_duration(st, key, value, &st->cfg->connect_timeout);
}

static int g_idle_timeout(struct parse_state *st, const char *key, const char *value)
{
	st->cfg->idle_timeout_set = true;
	return set_duration(st, key, value, &st->cfg->idle_timeout);
}

static int set_bool(struct parse_state *st, const char *key, const char *value, bool *out)
{
	const char *why;
	if (parse_bool(value, out, &why) < 0) {
		fail(st, st->line, "%s: %s: '%s'", key, why, value);
		return -1;
	}
	return 0;
}

static int g_drain_timeout(struct parse_state *st, const char *key, const char *value)
{
	return set_duration(st, key, value, &st->cfg->drain_timeout);
}

static int g_user(struct parse_state *st, const char *key, const char *value)
{
	/* whether it exists is checked at start-up (config_check_user) */
	if (strlen(value) > USER_NAME_MAX) {
		fail(st, st->line, "%s: no such user '%s'", key, value);
		return -1;
	}
	snprintf(st->cfg->user, sizeof(st->cfg->user), "%s", value);
	st->cfg->user_line = st->line;
	return 0;
}

static int g_keep_net_bind(struct parse_state *st, const char *key, const char *value)
{
	st->cfg->keep_net_bind_line = st->line;
	return set_bool(st, key, value, &st->cfg->keep_net_bind);
}

static int g_watch_config(struct parse_state *st, const char *key, const char *value)
{
	return set_bool(st, key, value, &st->cfg->watch_config);
}

/* Why a cannot be listened on although it parses, or NULL. */
static const char *listen_problem(const struct addr *a)
{
	if (addr_family(a) == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a->u.in6.sin6_addr))
		return "IPv4-mapped address: write it as IPv4";
	if (addr_is_link_local(a) && a->u.in6.sin6_scope_id == 0)
		return "a link-local address needs its interface: fe80::...%IFACE";
	return NULL;
}

static int g_metrics_listen(struct parse_state *st, const char *key, const char *value)
{
	const char *why;
	int n = addr_parse_listen(value, st->cfg->metrics_listen, 2, &why);
	if (n < 0 || (why = listen_problem(&st->cfg->metrics_listen[0])) != NULL) {
		fail(st, st->line, "%s: %s: '%s'", key, why, value);
		return -1;
	}
	st->cfg->n_metrics_listen = (size_t)n;
	st->metrics_line = st->line;
	return 0;
}

static int metrics_allow_item(const char *item, void *ctx)
{
	struct parse_state *st = ctx;
	struct cidr c;
	const char *why;
	if (cidr_parse(item, &c, &why) < 0 ||
	    cidr_list_add(&st->cfg->metrics_allow, &c, &why) < 0) {
		fail(st, st->line, "%s: %s: '%s'", st->key, why, item);
		return -1;
	}
	return 0;
}

static int for_each_item(struct parse_state *st, const char *key, const char *value,
			 int (*fn)(const char *item, void *st));

static int g_metrics_allow(struct parse_state *st, const char *key, const char *value)
{
	return for_each_item(st, key, value, metrics_allow_item);
}

static int g_log_level(struct parse_state *st, const char *key, const char *value)
{
	if (log_level_parse(value, &st->cfg->log_level) < 0) {
		fail(st, st->line, "%s: expected error, warning, info or debug: '%s'",
		     key, value);
		return -1;
	}
	return 0;
}

/* Calls fn for each entry of a comma- or blank-separated list; the key
 * being parsed is st->key while it runs. */
static int for_each_item(struct parse_state *st, const char *key, const char *value,
			 int (*fn)(const char *item, void *st))
{
	const char *why;

	st->key = key;
	int n = parse_list(value, fn, st, &why);
	if (n < 0) {
		if (why != NULL)
			fail(st, st->line, "%s: %s", key, why);
		return -1;
	}
	if (n == 0) {
		fail(st, st->line, "%s: empty value", key);
		return -1;
	}
	return 0;
}

static int listen_item(const char *item, void *ctx)
{
	struct parse_state *st = ctx;
	const char *key = st->key;
	struct service *svc = st->cur;
	const char *why;
	struct addr parsed[2];
	int n = addr_parse_listen(item, parsed, 2, &why);
	if (n < 0) {
		fail(st, st->line, "%s: %s: '%s'", key, why, item);
		return -1;
	}
	if (svc->n_listen + (size_t)n > SERVICE_LISTEN_MAX) {
		fail(st, st->line, "%s: too many listen addresses (at most %d): '%s'", key,
		     SERVICE_LISTEN_MAX, item);
		return -1;
	}
	struct addr *listen = realloc(svc->listen, (svc->n_listen + (size_t)n) * sizeof(*listen));
	unsigned *lines = listen != NULL ? realloc(svc->listen_line,
			(svc->n_listen + (size_t)n) * sizeof(*lines)) : NULL;
	if (listen != NULL)
		svc->listen = listen;
	if (lines == NULL) {
		fail(st, st->line, "out of memory");
		return -1;
	}
	svc->listen_line = lines;
	memcpy(&svc->listen[svc->n_listen], parsed, (size_t)n * sizeof(parsed[0]));
	if ((why = listen_problem(&svc->listen[svc->n_listen])) != NULL) {
		fail(st, st->line, "%s: %s: '%s'", key, why, item);
		return -1;
	}
	for (int i = 0; i < n; i++)
		svc->listen_line[svc->n_listen++] = st->line;
	return 0;
}

static int s_listen(struct parse_state *st, const char *key, const char *value)
{
	return for_each_item(st, key, value, listen_item);
}

static int set_backend(struct parse_state *st, const char *key, const char *value,
		       int family, struct addr *out, bool *has, unsigned *line)
{
	const char *why;
	if (addr_parse(value, out, &why) < 0) {
		fail(st, st->line, "%s: %s: '%s'", key, why, value);
		return -1;
	}
	if (addr_family(out) != family) {
		fail(st, st->line, "%s: expected an %s address: '%s'", key,
		     family == AF_INET ? "IPv4" : "IPv6", value);
		return -1;
	}
	if ((why = addr_backend_problem(out)) != NULL) {
		fail(st, st->line, "%s: %s: '%s'", key, why, value);
		return -1;
	}
	*has = true;
	*line = st->line;
	return 0;
}

static int s_backend4(struct parse_state *st, const char *key, const char *value)
{
	return set_backend(st, key, value, AF_INET, &st->cur->backend4,
			   &st->cur->has_backend4, &st->cur->backend4_line);
}

static int s_backend6(struct parse_state *st, const char *key, const char *value)
{
	return set_backend(st, key, value, AF_INET6, &st->cur->backend6,
			   &st->cur->has_backend6, &st->cur->backend6_line);
}

static int allow_item(const char *item, void *ctx)
{
	struct parse_state *st = ctx;
	const char *key = st->key;
	struct cidr c;
	const char *why;
	if (cidr_parse(item, &c, &why) < 0 || cidr_list_add(&st->cur->allow, &c, &why) < 0) {
		fail(st, st->line, "%s: %s: '%s'", key, why, item);
		return -1;
	}
	return 0;
}

static int s_allow(struct parse_state *st, const char *key, const char *value)
{
	return for_each_item(st, key, value, allow_item);
}

static int protocol_item(const char *item, void *ctx)
{
	struct parse_state *st = ctx;
	bool *which = strcmp(item, "tcp") == 0 ? &st->cur->tcp :
		      strcmp(item, "udp") == 0 ? &st->cur->udp : NULL;
	if (which == NULL) {
		fail(st, st->line, "%s: expected tcp, udp or both: '%s'", st->key, item);
		return -1;
	}
	if (*which) {
		fail(st, st->line, "%s: '%s' given twice", st->key, item);
		return -1;
	}
	*which = true;
	return 0;
}

static int s_protocol(struct parse_state *st, const char *key, const char *value)
{
	st->cur->tcp = false; /* the default until now */
	st->cur->protocol_line = st->line;
	return for_each_item(st, key, value, protocol_item);
}

static int s_proxy_protocol(struct parse_state *st, const char *key, const char *value)
{
	st->cur->proxy_protocol_line = st->line;
	if (proxy_protocol_parse(value, &st->cur->proxy_protocol) < 0) {
		fail(st, st->line, "%s: expected off, v1 or v2: '%s'", key, value);
		return -1;
	}
	return 0;
}

static int s_connect_timeout(struct parse_state *st, const char *key, const char *value)
{
	return set_duration(st, key, value, &st->cur->connect_timeout);
}

static int s_idle_timeout(struct parse_state *st, const char *key, const char *value)
{
	return set_duration(st, key, value, &st->cur->idle_timeout);
}

static const struct key global_keys[] = {
	{ "user", false, g_user },
	{ "keep_net_bind", false, g_keep_net_bind },
	{ "drain_timeout", false, g_drain_timeout },
	{ "max_connections", false, g_max_connections },
	{ "max_connections_per_source", false, g_max_connections_per_source },
	{ "connect_timeout", false, g_connect_timeout },
	{ "idle_timeout", false, g_idle_timeout },
	{ "log_level", false, g_log_level },
	{ "metrics_listen", false, g_metrics_listen },
	{ "metrics_allow", true, g_metrics_allow },
	{ "watch_config", false, g_watch_config },
};

static const struct key service_keys[] = {
	{ "listen", false, s_listen },
	{ "backend4", false, s_backend4 },
	{ "backend6", false, s_backend6 },
	{ "connect_timeout", false, s_connect_timeout },
	{ "idle_timeout", false, s_idle_timeout },
	{ "allow", true, s_allow },
	{ "proxy_protocol", false, s_proxy_protocol },
	{ "protocol", false, s_protocol },
};

#define N_KEYS(t) (sizeof(t) / sizeof((t)[0]))

/* ---- sections ---- */

static bool valid_name(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > SERVICE_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!isalnum(c) && c != '_' && c != '-' && c != '.')
			return false;
	}
	return true;
}

/* Called by the reader for each "[name]" line, before inih sees it. */
static void begin_section(struct parse_state *st, const char *name)
{
	st->in_section = true;
	st->has_key = false;
	st->seen = 0;
	st->cur = NULL;
	st->in_global = false;

	if (strcmp(name, GLOBAL_SECTION) == 0) {
		if (st->global_line != 0)
			fail(st, st->line, "duplicate section [%s] (first at line %u)",
			     name, st->global_line);
		st->global_line = st->line;
		st->in_global = true;
		return;
	}
	if (!valid_name(name)) {
		fail(st, st->line,
		     "bad section name [%s]: use 1-%d letters, digits, '_', '-' or '.'",
		     name, SERVICE_NAME_MAX);
		return;
	}
	uint64_t hash = htab_hash_str(name);
	const struct entry *dup =
		(const struct entry *)htab_find(&st->names.by_key, hash, entry_name_is, name);
	if (dup != NULL) {
		fail(st, st->line, "duplicate section [%s] (first at line %u)", name,
		     dup->svc->line);
		return;
	}
	struct service *svc = calloc(1, sizeof(*svc));
	struct entry *e = svc != NULL ? index_new(&st->names) : NULL;
	if (e == NULL) {
		free(svc);
		fail(st, st->line, "out of memory");
		return;
	}
	svc->refs = 1; /* the config's */
	svc->tcp = true;
	memcpy(svc->name, name, strlen(name) + 1); /* valid_name: it fits */
	svc->line = st->line;
	svc->connect_timeout = -1; /* resolved from [global] after parsing */
	svc->idle_timeout = -1;
	e->svc = svc;
	if (htab_insert(&st->names.by_key, &e->node, hash) < 0)
		fail(st, st->line, "out of memory"); /* svc is linked below: freed with cfg */
	*st->tail = svc;
	st->tail = &svc->next;
	st->cfg->n_services++;
	st->cur = svc;
}

#define UTF8_BOM "\xEF\xBB\xBF"

/* If line is a section header as inih sees it, returns its name in out
 * (trimmed). An indented line after a key continues that key instead. */
static bool section_header(const struct parse_state *st, const char *line,
			   char *out, size_t n)
{
	const char *start = line;
	if (st->line == 1 && strncmp(line, UTF8_BOM, strlen(UTF8_BOM)) == 0)
		start = line += strlen(UTF8_BOM);
	while (isspace((unsigned char)*line))
		line++;
	if (*line != '[' || (line > start && st->has_key))
		return false;
	line++;
	const char *close = strchr(line, ']');
	if (close == NULL)
		return false; /* inih reports the syntax error */
	while (line < close && isspace((unsigned char)*line))
		line++;
	size_t len = (size_t)(close - line);
	while (len > 0 && isspace((unsigned char)line[len - 1]))
		len--;
	if (len >= n)
		len = n - 1;
	memcpy(out, line, len);
	out[len] = '\0';
	return true;
}

/* inih reads an indented line after a key as more of that key's value. */
static bool is_continuation(const char *line)
{
	if (*line != ' ' && *line != '\t')
		return false;
	while (isspace((unsigned char)*line))
		line++;
	return *line != '\0' && *line != ';' && *line != '#';
}

/* ---- inih callbacks ---- */

/* fgets-like reader that counts lines and sees section headers first. */
static char *reader(char *str, int num, void *stream)
{
	struct parse_state *st = stream;
	size_t cap = (size_t)num, len = 0;
	bool too_long = false;
	int c;

	for (;;) {
		c = st->src.text < st->src.end ? (unsigned char)*st->src.text++ : EOF;
		if (c == EOF)
			break;
		if (len + 1 < cap)
			str[len++] = (char)c;
		else if (c != '\n')
			too_long = true;
		if (c == '\n')
			break;
	}
	if (len == 0 && c == EOF)
		return NULL;
	str[len] = '\0';
	st->line++;
	if (too_long) {
		fail(st, st->line, "line too long (at most %d characters)", num - 1);
		str[0] = '\0';
		return str;
	}
	char name[INI_MAX_LINE];
	if (!st->failed && section_header(st, str, name, sizeof(name)))
		begin_section(st, name);
	else if (!st->failed && st->has_key && is_continuation(str))
		fail(st, st->line, "indented line: continuation lines are not supported "
				   "(write one key = value per line)");
	return str;
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
	struct parse_state *st = user;
	const struct key *keys;
	size_t n_keys;

	(void)section; /* the reader already opened it */
	if (st->failed)
		return 0;
	st->has_key = true;
	if (!st->in_section) {
		fail(st, st->line, "'%s' outside of a section", key);
		return 0;
	}
	if (st->in_global) {
		keys = global_keys;
		n_keys = N_KEYS(global_keys);
	} else if (st->cur != NULL) {
		keys = service_keys;
		n_keys = N_KEYS(service_keys);
	} else {
		return 0; /* a bad section header was already reported */
	}
	for (size_t i = 0; i < n_keys; i++) {
		if (strcmp(keys[i].name, key) != 0)
			continue;
		if ((st->seen & (1u << i)) && !keys[i].repeatable) {
			fail(st, st->line, "duplicate key '%s'", key);
			return 0;
		}
		st->seen |= 1u << i;
		if (value[0] == '\0') {
			fail(st, st->line, "%s: empty value", key);
			return 0;
		}
		return keys[i].set(st, key, value) == 0;
	}
	fail(st, st->line, "unknown key '%s' in [%s]", key,
	     st->in_global ? GLOBAL_SECTION : st->cur->name);
	return 0;
}

/* ---- validation ---- */

static void fail_conflict(struct parse_state *st, unsigned line, const char *what,
			  const struct addr *a, const struct entry *e)
{
	char x[ADDR_STRLEN], y[ADDR_STRLEN];
	if (e->svc == NULL)
		fail(st, line, "%s %s conflicts with metrics_listen %s (line %u)", what,
		     addr_format(a, x), addr_format(e->addr, y), e->line);
	else
		fail(st, line, "%s %s conflicts with %s of [%s] (line %u)", what,
		     addr_format(a, x), addr_format(e->addr, y), e->svc->name, e->line);
}

/* Checks listen address i of svc against those before it (of every
 * service, in file order, for each protocol it shares), then adds it. */
static int check_listen_unique(struct parse_state *st, struct index *ix,
			       const struct service *svc, size_t i)
{
	const bool uses[PROTO_COUNT] = { [PROTO_TCP] = svc->tcp, [PROTO_UDP] = svc->udp };
	const struct entry *first = NULL;

	for (unsigned char p = 0; p < PROTO_COUNT; p++) {
		const struct entry *e = uses[p] ? listen_conflict(ix, p, &svc->listen[i]) : NULL;
		if (e != NULL && (first == NULL || e->seq < first->seq))
			first = e;
	}
	if (first != NULL) {
		fail_conflict(st, svc->listen_line[i], "listen", &svc->listen[i], first);
		return -1;
	}
	for (unsigned char p = 0; p < PROTO_COUNT; p++) {
		if (uses[p] && listen_add(ix, p, svc, &svc->listen[i], svc->listen_line[i]) < 0) {
			fail(st, svc->listen_line[i], "out of memory");
			return -1;
		}
	}
	return 0;
}

/* True when a backend address is one of this host's: loopback, or an
 * address of an interface (getifaddrs, asked once per load and only when a
 * wildcard listener shares a backend's port). */
static bool is_local(struct parse_state *st, const struct addr *b)
{
	if (addr_is_loopback(b))
		return true;
	if (!st->have_local) {
		struct ifaddrs *ifa = NULL;
		st->have_local = true;
		if (getifaddrs(&ifa) == 0) {
			size_t n = 0;
			for (struct ifaddrs *i = ifa; i != NULL; i = i->ifa_next)
				n++;
			st->local = calloc(n + 1, sizeof(*st->local));
			for (struct ifaddrs *i = ifa; i != NULL && st->local != NULL; i = i->ifa_next) {
				if (i->ifa_addr == NULL || (i->ifa_addr->sa_family != AF_INET &&
							    i->ifa_addr->sa_family != AF_INET6))
					continue;
				socklen_t len = i->ifa_addr->sa_family == AF_INET ?
					sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
				addr_from_sockaddr(&st->local[st->n_local++], i->ifa_addr, len);
			}
			freeifaddrs(ifa);
		}
	}
	for (size_t i = 0; i < st->n_local; i++) {
		/* the interface's address with the backend's port (and, link-local,
		 * its own scope: the same address on another link is another host) */
		struct addr here = addr_with_port(&st->local[i], addr_port(b));
		if (addr_family(&here) == AF_INET6 && !addr_is_link_local(&here))
			here.u.in6.sin6_scope_id = 0;
		if (addr_equal(&here, b))
			return true;
	}
	return false;
}

/* A backend that is one of dualproxy's own listen addresses (of a protocol
 * its service relays): every connection would come back to dualproxy. */
static int check_backend_loop(struct parse_state *st, const struct index *ix,
			      const struct service *svc, const char *key, const struct addr *b,
			      unsigned line)
{
	const bool uses[PROTO_COUNT] = { [PROTO_TCP] = svc->tcp, [PROTO_UDP] = svc->udp };
	char x[ADDR_STRLEN], y[ADDR_STRLEN];

	for (unsigned char p = 0; p < PROTO_COUNT; p++) {
		if (!uses[p])
			continue;
		const struct entry *e = find_addr(ix, p, b);
		if (e != NULL) {
			fail(st, line, "%s %s is dualproxy's own listen address (of [%s], line %u): "
			     "connections would loop back to it", key, addr_format(b, x),
			     e->svc->name, e->line);
			return -1;
		}
		struct addr any = addr_wildcard(addr_family(b), addr_port(b));
		e = find_addr(ix, p, &any);
		if (e != NULL && is_local(st, b)) {
			fail(st, line, "%s %s is an address of this host, where [%s] listens with "
			     "%s (line %u): connections would loop back to dualproxy", key,
			     addr_format(b, x), e->svc->name, addr_format(e->addr, y), e->line);
			return -1;
		}
	}
	return 0;
}

/* Fills in metrics_allow's default. */
static int default_metrics_allow(struct parse_state *st)
{
	if (st->cfg->metrics_allow.n > 0)
		return 0;
	st->key = "metrics_allow";
	const char *why;
	return parse_list(METRICS_ALLOW_DEFAULT, metrics_allow_item, st, &why) < 0 ? -1 : 0;
}

static int validate_services(struct parse_state *st, struct index *ix, struct index *mix)
{
	struct config *cfg = st->cfg;

	for (size_t m = 0; m < cfg->n_metrics_listen; m++)
		if (listen_add(mix, PROTO_TCP, NULL, &cfg->metrics_listen[m], st->metrics_line) < 0) {
			fail(st, st->metrics_line, "out of memory");
			return -1;
		}
	for (struct service *svc = cfg->services; svc != NULL; svc = svc->next) {
		if (svc->n_listen == 0) {
			fail(st, svc->line, "[%s]: no listen address", svc->name);
			return -1;
		}
		if (!svc->has_backend4 && !svc->has_backend6) {
			fail(st, svc->line, "[%s]: no backend4 or backend6", svc->name);
			return -1;
		}
		for (size_t i = 0; i < svc->n_listen; i++)
			if (check_listen_unique(st, ix, svc, i) < 0)
				return -1;
		for (size_t i = 0; i < svc->n_listen && svc->tcp; i++) {
			const struct entry *e = listen_conflict(mix, PROTO_TCP, &svc->listen[i]);
			if (e == NULL)
				continue;
			char a[ADDR_STRLEN], b[ADDR_STRLEN];
			fail(st, st->metrics_line, "metrics_listen %s conflicts with %s of [%s] (line %u)",
			     addr_format(e->addr, a), addr_format(&svc->listen[i], b), svc->name,
			     svc->listen_line[i]);
			return -1;
		}
		if (svc->udp && svc->proxy_protocol != PROXY_OFF) {
			fail(st, svc->proxy_protocol_line > svc->protocol_line ?
				 svc->proxy_protocol_line : svc->protocol_line,
			     "[%s]: proxy_protocol with protocol udp: no PROXY header is sent "
			     "on UDP (Traefik reads none there)", svc->name);
			return -1;
		}
		if (svc->connect_timeout < 0)
			svc->connect_timeout = cfg->connect_timeout;
		if (svc->idle_timeout >= 0 || cfg->idle_timeout_set) {
			double t = svc->idle_timeout >= 0 ? svc->idle_timeout : cfg->idle_timeout;
			svc->udp_idle_unreplied = svc->udp_idle_replied = t;
		} else {
			svc->udp_idle_unreplied = DEFAULT_UDP_IDLE_UNREPLIED;
			svc->udp_idle_replied = DEFAULT_UDP_IDLE_REPLIED;
		}
		if (svc->idle_timeout < 0)
			svc->idle_timeout = cfg->idle_timeout;
	}
	/* every listen address is known now: a backend may be any service's */
	for (struct service *svc = cfg->services; svc != NULL; svc = svc->next) {
		if (svc->has_backend4 && check_backend_loop(st, ix, svc, "backend4", &svc->backend4,
							    svc->backend4_line) < 0)
			return -1;
		if (svc->has_backend6 && check_backend_loop(st, ix, svc, "backend6", &svc->backend6,
							    svc->backend6_line) < 0)
			return -1;
	}
	return 0;
}

static int validate(struct parse_state *st)
{
	struct index ix = { 0 }, mix = { 0 };

	if (default_metrics_allow(st) < 0)
		return -1;
	if (st->cfg->services == NULL) {
		fail(st, st->line, "no service defined (add a [name] section with listen and backend4/backend6)");
		return -1;
	}
	int rc = validate_services(st, &ix, &mix);
	index_free(&ix);
	index_free(&mix);
	return rc;
}

/* ---- public ---- */

static struct config *config_new(const char *name)
{
	struct config *cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL)
		return NULL;
	cfg->path = strdup(name);
	if (cfg->path == NULL) {
		free(cfg);
		return NULL;
	}
	cfg->refs = 1;
	cfg->max_connections = DEFAULT_MAX_CONNECTIONS;
	cfg->connect_timeout = DEFAULT_CONNECT_TIMEOUT;
	cfg->idle_timeout = DEFAULT_IDLE_TIMEOUT;
	cfg->drain_timeout = DEFAULT_DRAIN_TIMEOUT;
	snprintf(cfg->user, sizeof(cfg->user), "%s", DEFAULT_USER);
	cfg->log_level = LOG_LVL_INFO;
	return cfg;
}

static struct config *load(const char *name, char *text, size_t len,
			   struct config_error *err)
{
	struct parse_state st = { .src = { text, text + len }, .err = err };

	memset(err, 0, sizeof(*err));
	snprintf(err->file, sizeof(err->file), "%s", name);
	st.cfg = config_new(name);
	if (st.cfg == NULL) {
		free(text);
		snprintf(err->msg, sizeof(err->msg), "out of memory");
		return NULL;
	}
	st.cfg->text = text;
	st.cfg->text_len = len;
	st.tail = &st.cfg->services;

	int rc = ini_parse_stream(reader, &st, handler, &st);
	if (rc > 0 && (!st.failed || (unsigned)rc < err->line)) {
		st.failed = false;
		fail(&st, (unsigned)rc, "syntax error: expected [section] or key = value");
	} else if (rc < 0 && !st.failed) {
		fail(&st, 0, "out of memory");
	}
	index_free(&st.names);
	if (!st.failed)
		validate(&st);
	free(st.local);
	if (st.failed) {
		config_unref(st.cfg);
		return NULL;
	}
	return st.cfg;
}

static const char *file_kind(mode_t mode)
{
	if (S_ISDIR(mode))
		return "a directory";
	if (S_ISFIFO(mode))
		return "a FIFO";
	if (S_ISCHR(mode))
		return "a character device";
	if (S_ISBLK(mode))
		return "a block device";
	if (S_ISSOCK(mode))
		return "a socket";
	return "a special file";
}

static int read_error(struct config_error *err, int fd, char *buf, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int read_error(struct config_error *err, int fd, char *buf, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	if (fd >= 0)
		close(fd);
	free(buf);
	return -1;
}

int config_read_file(const char *path, char **text, size_t *len, struct config_error *err)
{
	struct stat st;
	char *buf = NULL;
	size_t used = 0;

	memset(err, 0, sizeof(*err));
	snprintf(err->file, sizeof(err->file), "%s", path);
	/* non-blocking: a FIFO's open would wait for a writer */
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return read_error(err, -1, NULL, "cannot open: %s", strerror(errno));
	if (fstat(fd, &st) < 0)
		return read_error(err, fd, NULL, "cannot stat: %s", strerror(errno));
	if (!S_ISREG(st.st_mode))
		return read_error(err, fd, NULL, "%s, not a regular file: the configuration "
				  "is read only from a regular file", file_kind(st.st_mode));
	if (st.st_size > CONFIG_FILE_MAX)
		return read_error(err, fd, NULL, "too large: %lld bytes (at most %d)",
				  (long long)st.st_size, CONFIG_FILE_MAX);
	/* one byte more than it had: a file that grows meanwhile is seen to */
	size_t cap = (size_t)st.st_size + 1;
	buf = malloc(cap + 1);
	if (buf == NULL)
		return read_error(err, fd, NULL, "out of memory");
	for (;;) {
		if (used == cap) {
			if (cap > CONFIG_FILE_MAX)
				return read_error(err, fd, buf, "too large: more than %d bytes",
						  CONFIG_FILE_MAX);
			size_t more = cap * 2 > CONFIG_FILE_MAX + 1 ? CONFIG_FILE_MAX + 1 : cap * 2;
			char *grown = realloc(buf, more + 1);
			if (grown == NULL)
				return read_error(err, fd, buf, "out of memory");
			buf = grown;
			cap = more;
		}
		ssize_t n = read(fd, buf + used, cap - used);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return read_error(err, fd, buf, "cannot read: %s", strerror(errno));
		if (n == 0)
			break;
		used += (size_t)n;
	}
	close(fd);
	buf[used] = '\0';
	*text = buf;
	*len = used;
	return 0;
}

struct config *config_load_file(const char *path, struct config_error *err)
{
	char *text;
	size_t len;
	if (config_read_file(path, &text, &len, err) < 0)
		return NULL;
	return load(path, text, len, err);
}

struct config *config_load_text(const char *name, char *text, size_t len,
				struct config_error *err)
{
	return load(name, text, len, err);
}

struct config *config_load_string(const char *name, const char *text,
				  struct config_error *err)
{
	char *copy = strdup(text);
	if (copy == NULL) {
		memset(err, 0, sizeof(*err));
		snprintf(err->file, sizeof(err->file), "%s", name);
		snprintf(err->msg, sizeof(err->msg), "out of memory");
		return NULL;
	}
	return load(name, copy, strlen(copy), err);
}

bool config_same_text(const struct config *cfg, const char *text, size_t len)
{
	return cfg != NULL && cfg->text != NULL && cfg->text_len == len &&
	       memcmp(cfg->text, text, len) == 0;
}

int config_check_user(const struct config *cfg, struct config_error *err)
{
	errno = 0;
	if (getpwnam(cfg->user) != NULL)
		return 0;
	memset(err, 0, sizeof(*err));
	snprintf(err->file, sizeof(err->file), "%s", cfg->path);
	err->line = cfg->user_line;
	if (errno != 0 && errno != ENOENT && errno != ESRCH)
		snprintf(err->msg, sizeof(err->msg), "user: cannot look up '%s': %s", cfg->user,
			 strerror(errno));
	else
		snprintf(err->msg, sizeof(err->msg), "user: no such user '%s'", cfg->user);
	return -1;
}

void config_check_owner(const char *path, bool started_as_root)
{
	struct stat st;
	if (!started_as_root || stat(path, &st) < 0)
		return;
	if (st.st_uid != 0)
		log_warn("%s is owned by uid %u, not root: that user controls what "
			 "dualproxy binds and where it connects", path, (unsigned)st.st_uid);
	else if (st.st_mode & (S_IWGRP | S_IWOTH))
		log_warn("%s is writable by %s: others control what dualproxy binds "
			 "and where it connects", path,
			 st.st_mode & S_IWOTH ? "everyone" : "its group");
}

char *config_error_format(const struct config_error *err, char *buf, size_t n)
{
	if (err->line > 0)
		snprintf(buf, n, "%s:%u: %s", err->file, err->line, err->msg);
	else
		snprintf(buf, n, "%s: %s", err->file, err->msg);
	return buf;
}

struct config *config_ref(struct config *cfg)
{
	cfg->refs++;
	return cfg;
}

void config_unref(struct config *cfg)
{
	if (cfg == NULL || --cfg->refs > 0)
		return;
	struct service *svc = cfg->services;
	while (svc != NULL) {
		struct service *next = svc->next;
		service_unref(svc);
		svc = next;
	}
	cidr_list_free(&cfg->metrics_allow);
	free(cfg->text);
	free(cfg->path);
	free(cfg);
}

struct service *service_ref(struct service *svc)
{
	svc->refs++;
	return svc;
}

void service_unref(struct service *svc)
{
	if (svc == NULL || --svc->refs > 0)
		return;
	free(svc->listen);
	free(svc->listen_line);
	cidr_list_free(&svc->allow);
	free(svc);
}

const struct addr *service_backend(const struct service *svc, int family)
{
	if (family == AF_INET6)
		return svc->has_backend6 ? &svc->backend6 : &svc->backend4;
	return svc->has_backend4 ? &svc->backend4 : &svc->backend6;
}
