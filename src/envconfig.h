/* envconfig.h: a config from klipper-lb's environment variables (K3s svclb drop-in) */
#ifndef DUALPROXY_ENVCONFIG_H
#define DUALPROXY_ENVCONFIG_H

#include <stdbool.h>

#include "config.h"

/* The name config errors from the environment carry instead of a file. */
#define ENVCONFIG_NAME "environment"

/* True when envp (NULL-terminated "NAME=value" strings) sets SRC_PORT. */
bool envconfig_wanted(char *const *envp);

/* Builds one TCP service from SRC_PORT, DEST_PROTO, DEST_PORT, DEST_IPS (or
 * DEST_IP and DEST_IP6) and SRC_RANGES. Returns a config with one reference
 * owned by the caller, or NULL with *err naming the variable at fault. */
struct config *envconfig_load(char *const *envp, struct config_error *err);

/* The configuration text envconfig_load builds from envp (malloc'd, the
 * caller frees it), or NULL with *err naming the variable at fault: what a
 * reload compares with the running configuration's text. */
char *envconfig_text(char *const *envp, struct config_error *err);

/* Loads text made by envconfig_text, taking ownership of it; errors are
 * reported as envconfig_load reports them (line 0). */
struct config *envconfig_load_text(char *text, struct config_error *err);

#endif
