/* config.h: an immutable, refcounted snapshot of the configuration file */
#ifndef DUALPROXY_CONFIG_H
#define DUALPROXY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "addr.h"
#include "cidr.h"
#include "log.h"
#include "proxyproto.h"

#define SERVICE_NAME_MAX 64   /* section names show up in logs and metrics */
#define SERVICE_LISTEN_MAX 16 /* addresses one service may listen on */
#define CONFIG_MSG_MAX 256
/* The largest configuration file read (1 MiB, some 20,000 services): it is
 * read and parsed inside the event loop, so its size bounds a reload. */
#define CONFIG_FILE_MAX (1024 * 1024)

#define DEFAULT_MAX_CONNECTIONS 20000
#define DEFAULT_CONNECT_TIMEOUT 5.0
#define DEFAULT_IDLE_TIMEOUT (15 * 60.0)
/* UDP flows without an explicit idle_timeout: conntrack's defaults */
#define DEFAULT_UDP_IDLE_UNREPLIED 30.0  /* until the backend has answered */
#define DEFAULT_UDP_IDLE_REPLIED 120.0   /* once it has */
#define DEFAULT_DRAIN_TIMEOUT 30.0
#define DEFAULT_USER "nobody"
#define USER_NAME_MAX 64

/* One [section] other than [global]: a forwarded port. Immutable once
 * loaded; refcounted, so that live connections keep only their own service
 * alive, not the whole snapshot. Sized to what it holds. */
struct service {
	/* runtime */
	unsigned refs;                  /* its config, plus one per live connection */
	/* configuration */
	char name[SERVICE_NAME_MAX + 1];
	unsigned line;                  /* line of the [name] header */
	struct addr *listen;            /* n_listen addresses */
	unsigned *listen_line;          /* the line of each */
	size_t n_listen;
	struct addr backend4;           /* valid when has_backend4 */
	struct addr backend6;           /* valid when has_backend6 */
	bool has_backend4, has_backend6;
	unsigned backend4_line, backend6_line;
	bool tcp, udp;                  /* protocol: what it relays (tcp unless set) */
	unsigned protocol_line;         /* line of `protocol`, 0 if not set */
	double connect_timeout;         /* seconds; the global value unless set here */
	double idle_timeout;            /* seconds; the global value unless set here */
	double udp_idle_unreplied;      /* UDP flows: idle_timeout if set here or in */
	double udp_idle_replied;        /*   [global], else conntrack's defaults */
	struct cidr_list allow;         /* allowed clients; empty allows all */
	enum proxy_protocol proxy_protocol;
	unsigned proxy_protocol_line;   /* line of `proxy_protocol`, 0 if not set */
	struct service *next;
};

struct config {
	/* runtime */
	unsigned refs;           /* the running snapshot, a reload (relays hold their service) */
	/* configuration */
	char *path;              /* file it came from, for messages */
	char *text;              /* the bytes it was loaded from (NUL-terminated) */
	size_t text_len;         /*   and their number: an unchanged file is no reload */
	char user[USER_NAME_MAX + 1]; /* account to switch to when started as root */
	unsigned user_line;      /* line of `user`, 0 when the default applies */
	bool keep_net_bind;      /* keep CAP_NET_BIND_SERVICE after the drop */
	unsigned keep_net_bind_line; /* its line, 0 when the default applies */
	unsigned long max_connections;
	unsigned long max_connections_per_source; /* 0: unlimited */
	double connect_timeout;
	double idle_timeout;
	bool idle_timeout_set;   /* idle_timeout given in [global] */
	double drain_timeout;    /* SIGTERM: how long live connections may finish */
	enum log_level log_level;
	struct addr metrics_listen[2]; /* where /metrics is served */
	size_t n_metrics_listen;       /* 0: no metrics endpoint */
	struct cidr_list metrics_allow; /* its clients; the default: loopback and private ranges */
	bool watch_config;       /* reload when the file changes */
	struct service *services; /* in file order */
	size_t n_services;
};

/* Where and why loading failed: printed as "file:line: msg" (line 0: "file: msg"). */
struct config_error {
	char file[CONFIG_MSG_MAX];
	unsigned line;
	char msg[CONFIG_MSG_MAX];
};

/* Reads a whole configuration file without blocking on what is not one: it
 * is opened non-blocking and must be a regular file (fstat on that
 * descriptor: no FIFO, device, directory or socket, through symlinks too)
 * of at most CONFIG_FILE_MAX bytes. Returns 0 with a malloc'd,
 * NUL-terminated copy in *text (the caller frees it) and its length in
 * *len, or -1 with *err ("FILE: why", line 0). */
int config_read_file(const char *path, char **text, size_t *len, struct config_error *err);

/* Load and validate a file (config_read_file, then config_load_text).
 * Returns a config with one reference owned by the caller, or NULL with
 * *err filled in. */
struct config *config_load_file(const char *path, struct config_error *err);

/* The same from len bytes of text in memory (NUL-terminated), of which the
 * config takes ownership (freed on failure too); name is used in messages. */
struct config *config_load_text(const char *name, char *text, size_t len,
				struct config_error *err);

/* The same from a string, which is copied. */
struct config *config_load_string(const char *name, const char *text,
				  struct config_error *err);

/* True when cfg was loaded from exactly these len bytes. */
bool config_same_text(const struct config *cfg, const char *text, size_t len);

/* The prefixes metrics_allow admits when it is not set. */
#define METRICS_ALLOW_DEFAULT \
	"127.0.0.0/8 ::1/128 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 100.64.0.0/10 " \
	"fc00::/7 fe80::/10"

/* Checks that cfg's user exists (a name service lookup, which may block:
 * at start-up and for -t only, never on reload). Returns 0, or -1 with
 * *err naming the `user` line. */
int config_check_user(const struct config *cfg, struct config_error *err);

/* Warns when the file of a daemon started as root could be changed by
 * another user: not owned by root, or writable by group or others. */
void config_check_owner(const char *path, bool started_as_root);

/* Writes "file:line: msg" to a buffer of n bytes; returns buf. */
char *config_error_format(const struct config_error *err, char *buf, size_t n);

struct config *config_ref(struct config *cfg);
void config_unref(struct config *cfg);

struct service *service_ref(struct service *svc);
void service_unref(struct service *svc);

/* The backend for a client of this family: its own, else the other family's. */
const struct addr *service_backend(const struct service *svc, int family);

#endif
