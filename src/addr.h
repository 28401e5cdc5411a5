/* addr.h: socket addresses of both families: parsing and formatting */
#ifndef DUALPROXY_ADDR_H
#define DUALPROXY_ADDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* "[" + 45 characters of IPv6 + "%" scope + "]:" + 5 digits + NUL */
#define ADDR_STRLEN 72

struct addr {
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
		struct sockaddr_storage ss;
	} u;
	socklen_t len;
};

/* Parse a port 1-65535. Returns 0, or -1 with *err set to a static message. */
int addr_parse_port(const char *s, uint16_t *port, const char **err);

/* Parse "IPV4:PORT" or "[IPV6]:PORT" (numeric only); a link-local IPv6
 * address takes its interface as a scope, by name or index:
 * "[fe80::1%eth0]:PORT". Returns 0 or -1 with *err. */
int addr_parse(const char *s, struct addr *out, const char **err);

/* Parse a bare IP address, "10.43.0.10" or "fd45::10" (or "fe80::1%eth0"),
 * with port 0. Returns 0 or -1 with *err. */
int addr_parse_ip(const char *s, struct addr *out, const char **err);

/* Parse one listen entry: a bare "PORT" gives 0.0.0.0:PORT and [::]:PORT (2
 * addresses), anything else one address as addr_parse. Writes at most max
 * addresses to out; returns how many, or -1 with *err. */
int addr_parse_listen(const char *s, struct addr *out, size_t max, const char **err);

/* Fill from a sockaddr returned by accept/getsockname; IPv4-mapped IPv6
 * addresses are turned into plain IPv4. */
void addr_from_sockaddr(struct addr *a, const struct sockaddr *sa, socklen_t len);

/* Writes "1.2.3.4:80" or "[::1]:80" into buf (ADDR_STRLEN bytes); returns buf. */
char *addr_format(const struct addr *a, char *buf);

/* Bytes that identify an address and port, for hashing: family, port,
 * address (and IPv6 scope). Returns how many were written. */
#define ADDR_KEY_MAX 23
size_t addr_key(const struct addr *a, unsigned char key[ADDR_KEY_MAX]);

/* The same from a sockaddr_in or sockaddr_in6. */
size_t addr_key_sa(const struct sockaddr *sa, unsigned char key[ADDR_KEY_MAX]);

/* True when a and b cannot both be bound: the same family and port, and the
 * same address or either of them the wildcard. */
bool addr_overlaps(const struct addr *a, const struct addr *b);

/* True for 0.0.0.0 and ::. */
bool addr_is_wildcard(const struct addr *a);

/* True for 127.0.0.0/8 and ::1: addresses of this host whatever its interfaces. */
bool addr_is_loopback(const struct addr *a);

/* True for fe80::/10 (which needs a scope to be reached). */
bool addr_is_link_local(const struct addr *a);

/* Why a cannot be a backend that a TCP connection reaches, as a static
 * message, or NULL when it can: the unspecified address (0.0.0.0, ::),
 * the IPv4 broadcast address, a multicast address, an IPv4-mapped IPv6
 * address (written as IPv6, connected as IPv4), a link-local IPv6 address
 * without its interface. */
const char *addr_backend_problem(const struct addr *a);

/* The same address with port p. */
struct addr addr_with_port(const struct addr *a, uint16_t p);

/* The wildcard address (0.0.0.0 or ::) of a family, with port p. */
struct addr addr_wildcard(int family, uint16_t p);

int addr_family(const struct addr *a);
uint16_t addr_port(const struct addr *a);
bool addr_equal(const struct addr *a, const struct addr *b);

#endif
