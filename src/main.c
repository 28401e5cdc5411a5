/* main.c: command line, start-up, event loop, exit */
#include "autoconfig.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <sysexits.h>
#include <unistd.h>

#include "dualproxy.h"
#include "envconfig.h"
#include "lifecycle.h"
#include "log.h"

#ifndef DEFAULT_CONFIG
#define DEFAULT_CONFIG "/etc/dualproxy/dualproxy.ini"
#endif

static void usage(FILE *out)
{
	fprintf(out,
		"usage: dualproxy [-c FILE] [-t] [-V] [-h]\n"
		"Serve every configured port on IPv4 and IPv6 and relay each\n"
		"connection to the backend of its own address family.\n\n"
		"  -c FILE  configuration file (default: %s;\n"
		"           without -c and with SRC_PORT set, klipper-lb's variables)\n"
		"  -t       check the configuration and exit\n"
		"  -V       print the version and exit\n"
		"  -h       print this help and exit\n",
		DEFAULT_CONFIG);
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	int test_only = 0, opt;

	while ((opt = getopt(argc, argv, "c:tVh")) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 't':
			test_only = 1;
			break;
		case 'V':
			printf("%s\n", PACKAGE_STRING);
			return EX_OK;
		case 'h':
			usage(stdout);
			return EX_OK;
		default:
			usage(stderr);
			return EX_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "dualproxy: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return EX_USAGE;
	}

	/* no -c and klipper-lb's SRC_PORT set: configured by the environment */
	if (path == NULL && !envconfig_wanted(environ))
		path = DEFAULT_CONFIG;
	struct config_error err;
	struct config *cfg = path != NULL ? config_load_file(path, &err)
					  : envconfig_load(environ, &err);
	if (cfg != NULL && config_check_user(cfg, &err) < 0) {
		config_unref(cfg);
		cfg = NULL;
	}
	if (cfg == NULL) {
		char msg[2 * CONFIG_MSG_MAX];
		log_plain(LOG_LVL_ERROR, "%s", config_error_format(&err, msg, sizeof(msg)));
		return EX_CONFIG;
	}
	if (test_only) {
		log_plain(LOG_LVL_INFO, "%s: configuration ok", path != NULL ? path : ENVCONFIG_NAME);
		config_unref(cfg);
		return EX_OK;
	}
	log_set_level(cfg->log_level);

	struct dualproxy dp;
	int rc = lifecycle_start(&dp, path, cfg);
	if (rc == EX_OK)
		rc = lifecycle_run(&dp);
	lifecycle_cleanup(&dp);
	return rc;
}
