/*
 * fuzz_multipart: the multipart/form-data parser of the real HTTP layer
 * (libmicrohttpd's post processor and http.c's parts, in-process through
 * fuzz_daemon) on every route that takes multipart bodies. The input is
 *   byte 0   the route (table below)
 *   byte 1   bits 0-2 the Content-Type's form (boundary plain, quoted,
 *            with other parameters, or missing), bit 3 ?wait=true
 *   then     the body; the boundary is "fuzzb" (seeds use it).
 * fuzz_daemon checks each reply; a bulk ingest's reply must also list as
 * many items as it says it accepted.
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
	int status;
	json_t *j = fuzz_daemon_send_json(head, data + 2, len - 2, 0, &status);
	if (status == 202 && data[0] % NTARGETS == 1) {
		/* A bulk ingest lists every file it took. */
		json_int_t accepted = json_integer_value(json_object_get(j, "accepted"));
		json_int_t dups = json_integer_value(json_object_get(j, "duplicates"));
		if ((size_t)(accepted + dups) != json_array_size(json_object_get(j, "items"))) {
			char *s = json_dumps(j, 0);
			fprintf(stderr, "fuzz_multipart: /v1/ingest accepted %lld and %lld duplicates "
			        "but lists %zu items: %s\n", (long long)accepted, (long long)dups,
			        json_array_size(json_object_get(j, "items")), s ? s : "");
			abort();
		}
	}
	json_decref(j);
	return 0;
}
