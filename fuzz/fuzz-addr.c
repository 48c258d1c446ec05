/*
 * fuzz-addr.c - libFuzzer harness for the address parser
 * (libipc/addr.c), the one parser of every address the project takes.
 *
 * The input, as a string, goes to ipc_addr_parse(); a parsed address
 * must format back (ipc_addr_format) to a string that parses to the
 * same address, and a refused one must have a reason (ipc_addr_why).
 * The per-message variant (ipc_addr_parse_fast) must agree with it.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipc.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ipc_addr a, b, fast;
	char *text, buf[IPC_ADDR_MAX];
	int r;

	if ((text = malloc(size + 1)) == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	r = ipc_addr_parse(text, &a);
	if ((ipc_addr_parse_fast(text, &fast) == 0) != (r == 0))
		abort();
	if (r < 0) {
		if (ipc_addr_why(text) == NULL)
			abort();
		free(text);
		return 0;
	}
	if (ipc_addr_why(text) != NULL || fast.kind != a.kind ||
	    fast.pid != a.pid || fast.port != a.port ||
	    strcmp(fast.name, a.name) != 0 || strcmp(fast.host, a.host) != 0)
		abort();
	if (ipc_addr_format(&a, buf, sizeof(buf)) < 0 ||
	    ipc_addr_parse(buf, &b) < 0 || memcmp(&a, &b, sizeof(a)) != 0)
		abort();
	free(text);
	return 0;
}
