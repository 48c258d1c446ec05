/*
 * fuzz-broker.c - libFuzzer harness for the whole broker, in-process:
 * each input is what up to three local clients (UNIX socket pairs, this
 * process's credentials) write to a fresh broker with small limits, cut
 * into connections and turns by the markers fuzz-broker.h describes.
 * Messages cross between the clients (send on one, receive, stream,
 * acknowledge or monitor on another; "pid:self" is their direct queue),
 * memfds ride with SENDs, and connections close part-way.
 *
 * Any crash, sanitizer report, leak, descriptor left open, malformed or
 * misplaced frame from the broker, connection it keeps after its client
 * closed, or books that do not balance afterwards is a bug.
 */
#include "fuzz-broker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const enum conn_kind fz_kinds[FZ_CONNS] = {
	CONN_LOCAL, CONN_LOCAL, CONN_LOCAL,
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_run(data, size, fz_kinds, NULL);
	return 0;
}
