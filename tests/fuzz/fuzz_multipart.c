/*
 * fuzz_multipart: the multipart/form-data parser of the real HTTP layer
 * (libmicrohttpd's post processor and http.c's parts, in-process through
 * fuzz_daemon) on every route that takes multipart bodies. The input is
 *   byte 0   the route (table below)
 *   byte 1   bits 0-2 the Content-Type's form (boundary plain, quoted,
 *            with other parameters, or missing), bit 3 ?wait=true
 *   then     the body; the boundary is "fuzzb" (seeds use it).
 * fuzz_daemon checks each reply.
 */
#include <stdint.h>

#include "fuzz_daemon.h"
#include "fuzz_util.h"

static const char *const targets[] = {
	"POST /v1/images", "POST /v1/ingest",  "POST /v1/search",     "POST /v1/classify",
	"POST /v1/embed",  "POST /v1/texts",   "PATCH /v1/images/1",
};
#define NTARGETS (sizeof targets / sizeof *targets)

static const char *const ctypes[8] = {
	"multipart/form-data; boundary=fuzzb", "multipart/form-data; boundary=fuzzb",
	"multipart/form-data; boundary=fuzzb", "multipart/form-data; boundary=\"fuzzb\"",
	"multipart/form-data; charset=utf-8; boundary=fuzzb", "Multipart/Form-Data; BOUNDARY=fuzzb",
	"multipart/form-data", "multipart/form-data; boundary=",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_daemon_start();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	char head[512];
	if (len < 2)
		return 0;
	snprintf(head, sizeof head,
	         "%s%s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nContent-Type: %s",
	         targets[data[0] % NTARGETS], (data[1] & 8) ? "?wait=true" : "", FUZZ_KEY,
	         ctypes[data[1] & 7]);
	fuzz_daemon_send(head, data + 2, len - 2, 0);
	return 0;
}
