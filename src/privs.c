/* privs.c: the switch to an unprivileged user after binding (libcap-ng) */
#include "autoconfig.h"

#include <cap-ng.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "log.h"
#include "privs.h"

static int set_no_new_privs(void)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		log_error("cannot set no_new_privs: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* Checks the drop took: root cannot come back and no capability is left but
 * the kept one. */
static int verify(bool keep)
{
	if (setuid(0) == 0 || setgid(0) == 0) {
		log_error("privilege drop failed: root could be regained");
		return -1;
	}
	capng_get_caps_process();
	for (unsigned cap = 0; cap <= CAP_LAST_CAP; cap++) {
		if (keep && cap == CAP_NET_BIND_SERVICE)
			continue;
		if (capng_have_capability(CAPNG_PERMITTED, cap) ||
		    capng_have_capability(CAPNG_EFFECTIVE, cap)) {
			log_error("privilege drop failed: %s still held",
				  capng_capability_to_name(cap));
			return -1;
		}
	}
	return 0;
}

static int drop_as_non_root(bool keep)
{
	capng_get_caps_process();
	bool can_bound = capng_have_capability(CAPNG_EFFECTIVE, CAP_SETPCAP);
	bool has_bind = capng_have_capability(CAPNG_PERMITTED, CAP_NET_BIND_SERVICE);
	capng_clear(can_bound ? CAPNG_SELECT_BOTH : CAPNG_SELECT_CAPS);
	if (keep && has_bind)
		capng_update(CAPNG_ADD, CAPNG_EFFECTIVE | CAPNG_PERMITTED,
			     CAP_NET_BIND_SERVICE);
	if (capng_apply(can_bound ? CAPNG_SELECT_BOTH : CAPNG_SELECT_CAPS) < 0) {
		log_error("cannot drop capabilities");
		return -1;
	}
	if (set_no_new_privs() < 0 || verify(keep) < 0)
		return -1;
	log_info("running as uid %u, %s", (unsigned)getuid(),
		 keep && has_bind ? "keeping cap_net_bind_service" : "no capabilities");
	return 0;
}

int privs_drop(const struct config *cfg)
{
	if (geteuid() != 0)
		return drop_as_non_root(cfg->keep_net_bind);

	errno = 0;
	struct passwd *pw = getpwnam(cfg->user);
	if (pw == NULL) {
		log_error("user '%s' not found%s%s", cfg->user, errno ? ": " : "",
			  errno ? strerror(errno) : "");
		return -1;
	}
	if (pw->pw_uid == 0) {
		if (cfg->user_line == 0) {
			log_error("user '%s' has uid 0: write `user = %s` to run as root",
				  cfg->user, cfg->user);
			return -1;
		}
		log_warn("running as root (user = %s): all privileges kept", cfg->user);
		return 0;
	}

	capng_clear(CAPNG_SELECT_BOTH);
	if (cfg->keep_net_bind)
		capng_update(CAPNG_ADD, CAPNG_EFFECTIVE | CAPNG_PERMITTED,
			     CAP_NET_BIND_SERVICE);
	int rc = capng_change_id((int)pw->pw_uid, (int)pw->pw_gid,
				 CAPNG_DROP_SUPP_GRP | CAPNG_CLEAR_BOUNDING |
					 CAPNG_CLEAR_AMBIENT);
	if (rc < 0) {
		log_error("cannot switch to user %s (libcap-ng error %d): %s", cfg->user,
			  rc, strerror(errno));
		return -1;
	}
	if (set_no_new_privs() < 0 || verify(cfg->keep_net_bind) < 0)
		return -1;
	log_info("running as user %s (uid %u, gid %u)%s", cfg->user,
		 (unsigned)pw->pw_uid, (unsigned)pw->pw_gid,
		 cfg->keep_net_bind ? ", keeping cap_net_bind_service" : "");
	return 0;
}
