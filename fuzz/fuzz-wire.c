/*
 * fuzz-wire.c - libFuzzer harness for the frame codec (libipc/wire.c).
 *
 * Every input is offered to wire_frame_len() and wire_decode() as the
 * broker and the library do; a frame that decodes must encode back to
 * exactly the bytes it came from (the codec has one encoding per frame),
 * and its encoded length must agree.  Any crash, sanitizer report or
 * mismatch is a bug.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wire_frame f;
	const char *why = NULL;
	uint8_t *out;
	long len;
	size_t elen;

	/* The same bound the broker uses with its default limit. */
	len = wire_frame_len(data, size, WIRE_PAYLOAD_DEFAULT +
	    WIRE_OVERHEAD_MAX);
	if (len <= 0 || (size_t)len > size)
		return 0;
	if (wire_decode(data, (size_t)len, &f, &why) < 0) {
		if (why == NULL)
			abort();	/* a refusal always says why */
		return 0;
	}
	elen = wire_encoded_len(&f);
	if (elen != (size_t)len)
		abort();
	if ((out = malloc(elen)) == NULL)
		return 0;
	if (wire_encode(&f, out, elen) != (long)elen ||
	    memcmp(out, data, elen) != 0)
		abort();
	free(out);
	(void)wire_type_name(f.type);
	return 0;
}
