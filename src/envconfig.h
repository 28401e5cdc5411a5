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

#endif
