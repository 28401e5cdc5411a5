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

/* Parse "IPV4:PORT" or "[IPV6]:PORT" (numeric only). Returns 0 or -1 with *err. */
int addr_parse(const char *s, struct addr *out, const char **err);

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

int addr_family(const struct addr *a);
uint16_t addr_port(const struct addr *a);
bool addr_equal(const struct addr *a, const struct addr *b);

#endif
