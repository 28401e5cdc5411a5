/* fuzz_config.c: libFuzzer harness for config_load_string (the INI reader, keys and validation) */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "config.h"
#include "fuzz_check.h"

#define FUZZ_NAME "fuzz.ini"
#define ERRBUF_MAX (2 * CONFIG_MSG_MAX + 32)

/* Lines of text as a reader counts them: each '\n' ends one, and whatever
 * follows the last one (possibly nothing) is one more. */
static unsigned count_lines(const char *text)
{
	unsigned n = 1;
	for (; *text != '\0'; text++)
		n += *text == '\n';
	return n;
}

static bool known_family(const struct addr *a)
{
	return addr_family(a) == AF_INET || addr_family(a) == AF_INET6;
}

/* Two addresses that cannot both be bound: same family and port, and the
 * same address or either one the wildcard; link-local addresses of two
 * interfaces are bound to their devices and do not collide. */
static bool overlap(const struct addr *a, const struct addr *b)
{
	if (addr_family(a) != addr_family(b) || addr_port(a) != addr_port(b))
		return false;
	if (addr_family(a) == AF_INET) {
		in_addr_t x = a->u.in.sin_addr.s_addr, y = b->u.in.sin_addr.s_addr;
		return x == y || x == htonl(INADDR_ANY) || y == htonl(INADDR_ANY);
	}
	const struct in6_addr *x = &a->u.in6.sin6_addr, *y = &b->u.in6.sin6_addr;
	uint32_t sx = a->u.in6.sin6_scope_id, sy = b->u.in6.sin6_scope_id;
	if (sx != 0 && sy != 0 && sx != sy)
		return false;
	return memcmp(x, y, sizeof(*x)) == 0 || IN6_IS_ADDR_UNSPECIFIED(x) ||
	       IN6_IS_ADDR_UNSPECIFIED(y);
}

/* No listen address of a loaded config collides with another one of the same
 * protocol (a UDP socket and a TCP one of one address do not), nor a TCP one
 * with metrics_listen: the loader reports those as errors. */
static void check_no_overlap(const struct config *cfg)
{
	char a[ADDR_STRLEN], b[ADDR_STRLEN];

	for (const struct service *s = cfg->services; s != NULL; s = s->next) {
		for (size_t i = 0; i < s->n_listen; i++) {
			for (size_t m = 0; m < cfg->n_metrics_listen && s->tcp; m++)
				FUZZ_CHECK(!overlap(&s->listen[i], &cfg->metrics_listen[m]),
					   "[%s] listen %s and metrics_listen %s collide", s->name,
					   addr_format(&s->listen[i], a),
					   addr_format(&cfg->metrics_listen[m], b));
			for (const struct service *o = s; o != NULL; o = o->next) {
				bool shared = (s->tcp && o->tcp) || (s->udp && o->udp);
				for (size_t j = o == s ? i + 1 : 0; j < o->n_listen && shared; j++)
					FUZZ_CHECK(!overlap(&s->listen[i], &o->listen[j]),
						   "[%s] listen %s and [%s] listen %s collide",
						   s->name, addr_format(&s->listen[i], a), o->name,
						   addr_format(&o->listen[j], b));
			}
		}
	}
}

/* No backend of a loaded config is one of its own listen addresses (of a
 * protocol both relay), nor a loopback address on the port of a wildcard
 * listener: every connection would come back to dualproxy. */
static void check_no_loop(const struct config *cfg)
{
	char a[ADDR_STRLEN], b[ADDR_STRLEN];

	for (const struct service *s = cfg->services; s != NULL; s = s->next) {
		const struct addr *backends[2] = { s->has_backend4 ? &s->backend4 : NULL,
						   s->has_backend6 ? &s->backend6 : NULL };
		for (int k = 0; k < 2; k++) {
			const struct addr *be = backends[k];
			for (const struct service *o = cfg->services; o != NULL && be != NULL;
			     o = o->next) {
				if (!((s->tcp && o->tcp) || (s->udp && o->udp)))
					continue;
				for (size_t j = 0; j < o->n_listen; j++) {
					const struct addr *l = &o->listen[j];
					bool loop = addr_equal(be, l) ||
						    (addr_is_wildcard(l) && addr_is_loopback(be) &&
						     addr_family(l) == addr_family(be) &&
						     addr_port(l) == addr_port(be));
					FUZZ_CHECK(!loop, "[%s] backend %s is [%s]'s listen %s", s->name,
						   addr_format(be, a), o->name, addr_format(l, b));
				}
			}
		}
	}
}

static void check_service(const struct service *svc)
{
	FUZZ_CHECK(memchr(svc->name, '\0', sizeof(svc->name)) != NULL, "name not terminated");
	FUZZ_CHECK(svc->name[0] != '\0', "empty service name");
	FUZZ_CHECK(svc->n_listen >= 1 && svc->n_listen <= SERVICE_LISTEN_MAX,
		   "[%s]: %zu listen addresses", svc->name, svc->n_listen);
	for (size_t i = 0; i < svc->n_listen; i++) {
		FUZZ_CHECK(known_family(&svc->listen[i]) && addr_port(&svc->listen[i]) != 0,
			   "[%s]: listen[%zu] is not an address with a port", svc->name, i);
		FUZZ_CHECK(svc->listen_line[i] >= svc->line,
			   "[%s]: listen[%zu] at line %u, before its section (line %u)",
			   svc->name, i, svc->listen_line[i], svc->line);
	}
	FUZZ_CHECK(svc->has_backend4 || svc->has_backend6, "[%s]: no backend", svc->name);
	FUZZ_CHECK(!svc->has_backend4 || addr_family(&svc->backend4) == AF_INET,
		   "[%s]: backend4 is not IPv4", svc->name);
	FUZZ_CHECK(!svc->has_backend6 || addr_family(&svc->backend6) == AF_INET6,
		   "[%s]: backend6 is not IPv6", svc->name);
	/* a backend that no TCP connection can reach is an error */
	FUZZ_CHECK(!svc->has_backend4 || addr_backend_problem(&svc->backend4) == NULL,
		   "[%s]: backend4: %s", svc->name, addr_backend_problem(&svc->backend4));
	FUZZ_CHECK(!svc->has_backend6 || addr_backend_problem(&svc->backend6) == NULL,
		   "[%s]: backend6: %s", svc->name, addr_backend_problem(&svc->backend6));
	FUZZ_CHECK(svc->connect_timeout >= 0.001 && svc->idle_timeout >= 0.001,
		   "[%s]: a timeout under a millisecond (%g, %g)", svc->name,
		   svc->connect_timeout, svc->idle_timeout);
	const int families[] = { AF_INET, AF_INET6 };
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		const struct addr *b = service_backend(svc, families[i]);
		FUZZ_CHECK(b != NULL && known_family(b) && addr_port(b) != 0,
			   "[%s]: no usable backend for family %d", svc->name, families[i]);
	}
	FUZZ_CHECK(svc->connect_timeout > 0 && svc->idle_timeout > 0,
		   "[%s]: timeouts not resolved (%g, %g)", svc->name, svc->connect_timeout,
		   svc->idle_timeout);
	FUZZ_CHECK(svc->allow.n <= CIDR_MAX, "[%s]: %zu prefixes", svc->name, svc->allow.n);
	FUZZ_CHECK(svc->proxy_protocol == PROXY_OFF || svc->proxy_protocol == PROXY_V1 ||
		   svc->proxy_protocol == PROXY_V2, "[%s]: proxy_protocol %d", svc->name,
		   (int)svc->proxy_protocol);
	FUZZ_CHECK(svc->tcp || svc->udp, "[%s]: relays neither TCP nor UDP", svc->name);
	FUZZ_CHECK(!svc->udp || svc->proxy_protocol == PROXY_OFF,
		   "[%s]: a PROXY header with protocol udp", svc->name);
}

static void check_config(const struct config *cfg)
{
	size_t n = 0;

	FUZZ_CHECK(cfg->refs == 1, "a new config has %u references", cfg->refs);
	FUZZ_CHECK(cfg->path != NULL && strcmp(cfg->path, FUZZ_NAME) == 0, "path not kept");
	FUZZ_CHECK(cfg->n_services >= 1, "a config without services");
	FUZZ_CHECK(cfg->n_metrics_listen <= 2, "%zu metrics addresses", cfg->n_metrics_listen);
	FUZZ_CHECK(cfg->max_connections >= 1, "max_connections 0");
	FUZZ_CHECK(memchr(cfg->user, '\0', sizeof(cfg->user)) != NULL && cfg->user[0] != '\0',
		   "bad user");
	for (const struct service *svc = cfg->services; svc != NULL; svc = svc->next) {
		check_service(svc);
		n++;
	}
	FUZZ_CHECK(n == cfg->n_services, "n_services %zu, %zu in the list", cfg->n_services, n);
	check_no_overlap(cfg);
	check_no_loop(cfg);
	FUZZ_CHECK(cfg->text != NULL && cfg->text_len == strlen(cfg->text),
		   "the config does not keep the text it came from");
}

static void check_error(const struct config_error *err, const char *text)
{
	char buf[ERRBUF_MAX];
	unsigned lines = count_lines(text);

	FUZZ_CHECK(memchr(err->file, '\0', sizeof(err->file)) != NULL &&
		   strcmp(err->file, FUZZ_NAME) == 0, "err.file is not the name given");
	FUZZ_CHECK(memchr(err->msg, '\0', sizeof(err->msg)) != NULL, "err.msg not terminated");
	FUZZ_CHECK(err->msg[0] != '\0', "empty error message at line %u", err->line);
	FUZZ_CHECK(err->line <= lines + 1, "error at line %u of a text of %u lines: %s",
		   err->line, lines, err->msg);
	config_error_format(err, buf, sizeof(buf));
	FUZZ_CHECK(buf[0] != '\0', "config_error_format wrote nothing");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config_error err;
	char *text = fuzz_copy(data, size, true);

	memset(&err, 0x5a, sizeof(err)); /* the loader must fill all of it */
	struct config *cfg = config_load_string(FUZZ_NAME, text, &err);
	if (cfg != NULL) {
		check_config(cfg);
		FUZZ_CHECK(config_ref(cfg) == cfg, "config_ref returned another pointer");
		config_unref(cfg); /* a miscount shows as a leak or a double free */
		config_unref(cfg);
	} else {
		check_error(&err, text);
	}
	free(text);
	return 0;
}
