/* privs.h: the switch to an unprivileged user after binding (libcap-ng) */
#ifndef DUALPROXY_PRIVS_H
#define DUALPROXY_PRIVS_H

#include "config.h"

/* Started as root: switches to cfg->user (uid, primary gid, no supplementary
 * groups), keeps CAP_NET_BIND_SERVICE only if cfg->keep_net_bind, clears the
 * bounding and ambient sets, sets no_new_privs and verifies that root cannot
 * be regained. Not root: drops every capability but the kept one. Returns 0,
 * or -1 after logging (the daemon must not go on). */
int privs_drop(const struct config *cfg);

#endif
