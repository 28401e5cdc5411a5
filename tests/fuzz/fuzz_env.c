/* fuzz_env.c: libFuzzer harness for envconfig_load (klipper-lb's environment variables) */
#include "autoconfig.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envconfig.h"
#include "fuzz_check.h"
#include "parse.h"

#define ENV_SEP '\n' /* the input is one "NAME=value" per line */

/* The first value of name in envp, as getenv would find it; NULL if unset. */
static const char *lookup(char *const *envp, const char *name)
{
	size_t n = strlen(name);
	for (; *envp != NULL; envp++)
		if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

static void check_loaded(char *const *envp, const struct config *cfg)
{
	const char *src_port = lookup(envp, "SRC_PORT");

	FUZZ_CHECK(src_port != NULL, "loaded without SRC_PORT");
	FUZZ_CHECK(envconfig_wanted(envp), "loaded, yet envconfig_wanted is false");
	FUZZ_CHECK(cfg->refs == 1, "a new config has %u references", cfg->refs);
	FUZZ_CHECK(cfg->n_services == 1 && cfg->services != NULL &&
		   cfg->services->next == NULL, "%zu services, expected one", cfg->n_services);

	const struct service *svc = cfg->services;
	unsigned long port = strtoul(src_port, NULL, 10);
	/* one wildcard per family that has a destination, and nothing else */
	FUZZ_CHECK(svc->n_listen == (size_t)svc->has_backend4 + svc->has_backend6,
		   "%zu listen addresses for %d backends", svc->n_listen,
		   svc->has_backend4 + svc->has_backend6);
	for (size_t i = 0; i < svc->n_listen; i++) {
		const struct addr *a = &svc->listen[i];
		FUZZ_CHECK(addr_port(a) == port, "listens on port %u for SRC_PORT=%s",
			   addr_port(a), src_port);
		FUZZ_CHECK(addr_is_wildcard(a), "listens on a specific address");
		FUZZ_CHECK(addr_family(a) == AF_INET ? svc->has_backend4 : svc->has_backend6,
			   "listens on a family without a destination");
	}
	FUZZ_CHECK(svc->has_backend4 || svc->has_backend6, "no backend");
	/* SRC_RANGES set (non-blank): it is the whole allowlist */
	const char *ranges = lookup(envp, "SRC_RANGES");
	bool ranges_set = ranges != NULL && ranges[strspn(ranges, PARSE_LIST_SEP)] != '\0';
	FUZZ_CHECK(ranges_set == (svc->allow.n > 0), "SRC_RANGES %s but %zu prefixes",
		   ranges_set ? "set" : "unset", svc->allow.n);
	FUZZ_CHECK(!svc->has_backend4 || addr_family(&svc->backend4) == AF_INET,
		   "backend4 is not IPv4");
	FUZZ_CHECK(!svc->has_backend6 || addr_family(&svc->backend6) == AF_INET6,
		   "backend6 is not IPv6");
	FUZZ_CHECK(!svc->has_backend4 || addr_backend_problem(&svc->backend4) == NULL,
		   "backend4: %s", addr_backend_problem(&svc->backend4));
	FUZZ_CHECK(!svc->has_backend6 || addr_backend_problem(&svc->backend6) == NULL,
		   "backend6: %s", addr_backend_problem(&svc->backend6));
	/* what a reload compares with: the same environment makes the same text */
	struct config_error err;
	char *text = envconfig_text(envp, &err);
	FUZZ_CHECK(text != NULL && config_same_text(cfg, text, strlen(text)),
		   "envconfig_text differs from the text the config was loaded from");
	free(text);
	FUZZ_CHECK(svc->allow.n <= CIDR_MAX, "%zu prefixes", svc->allow.n);
}

static void check_error(const struct config_error *err)
{
	FUZZ_CHECK(memchr(err->file, '\0', sizeof(err->file)) != NULL &&
		   strcmp(err->file, ENVCONFIG_NAME) == 0,
		   "err.file is not \"" ENVCONFIG_NAME "\"");
	FUZZ_CHECK(memchr(err->msg, '\0', sizeof(err->msg)) != NULL, "err.msg not terminated");
	FUZZ_CHECK(err->msg[0] != '\0', "empty error message");
	FUZZ_CHECK(err->line == 0, "line %u in an error about the environment: %s", err->line,
		   err->msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t n = 1;
	for (size_t i = 0; i < size; i++)
		n += data[i] == ENV_SEP;

	char **envp = calloc(n + 1, sizeof(*envp)); /* NULL-terminated */
	if (envp == NULL)
		abort();
	size_t start = 0, k = 0;
	for (size_t i = 0; i <= size; i++) {
		if (i < size && data[i] != ENV_SEP)
			continue;
		envp[k++] = fuzz_copy(data + start, i - start, true);
		start = i + 1;
	}

	struct config_error err;
	memset(&err, 0x5a, sizeof(err)); /* the loader must fill what it reports */
	struct config *cfg = envconfig_load(envp, &err);
	if (cfg != NULL) {
		check_loaded(envp, cfg);
		config_unref(cfg);
	} else {
		check_error(&err);
	}
	for (size_t i = 0; i < k; i++)
		free(envp[i]);
	free(envp);
	return 0;
}
