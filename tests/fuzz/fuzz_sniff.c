/*
 * fuzz_sniff: the content sniffer (server/sniff.c, sniff_image) on any
 * bytes. It reads only the len bytes it is given (ASan sees the buffer's
 * exact end: libFuzzer passes a heap copy of that size) and says an image
 * type exactly when it returns 1, which is exactly when the format it
 * recognised is on the model's list (clip_image_format_accepted); sizes
 * are never negative.
 */
#include <stdint.h>

#include "clip.h"
#include "fuzz_util.h"
#include "sniff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	sniff_info info;
	memset(&info, 0x5a, sizeof info);
	int rc = sniff_image(data, len, &info);
	FUZZ_CHECK(rc == 0 || rc == 1);
	FUZZ_CHECK((rc == 1) == (info.mime != NULL));
	if (rc == 1)
		FUZZ_CHECK(strncmp(info.mime, "image/", 6) == 0);
	FUZZ_CHECK(rc == (info.format && clip_image_format_accepted(info.format)));
	FUZZ_CHECK(info.width >= 0 && info.height >= 0);
	return 0;
}
