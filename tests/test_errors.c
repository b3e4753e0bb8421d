/*
 * test_errors: server/errors.c, the one table from (module, code) to HTTP
 * status and client code string, and the error JSON built from it: every
 * code of every module (a code missing from the table is a 500
 * "internal"), the messages kept for 4xx and 503 with the secret
 * directories replaced by "<dir>", the generic message of other 5xx (the
 * full one goes to the log), and messages that are overlong, cut inside a
 * character or not UTF-8 at all, which must still make a JSON reply.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "errors.h"
#include "tap.h"

/* Every code of every module and the status and code string a client
 * must get for it. The rows errors.c does not list are its 500 "internal"
 * fallback, written out here too: any change to the mapping fails this
 * test until it is made here as well. */
static const struct row {
	api_domain domain;
	int code;
	int status;
	const char *name;
} table[] = {
	{ERR_API, API_EBADREQ, 400, "bad_request"},
	{ERR_API, API_EUNAUTH, 401, "unauthorized"},
	{ERR_API, API_EFORBIDDEN, 403, "forbidden"},
	{ERR_API, API_EHOST, 403, "host_not_allowed"},
	{ERR_API, API_EORIGIN, 403, "origin_not_allowed"},
	{ERR_API, API_ENOTFOUND, 404, "not_found"},
	{ERR_API, API_EMETHOD, 405, "method_not_allowed"},
	{ERR_API, API_ECONFLICT, 409, "conflict"},
	{ERR_API, API_ETOOBIG, 413, "payload_too_large"},
	{ERR_API, API_EUNSUPPORTED, 415, "unsupported_media_type"},
	{ERR_API, API_EUNDECODABLE, 422, "undecodable_image"},
	{ERR_API, API_EQUEUEFULL, 503, "queue_full"},
	{ERR_API, API_EUNAVAIL, 503, "unavailable"},
	{ERR_API, API_ETIMEOUT, 504, "timeout"},
	{ERR_API, API_EINTERNAL, 500, "internal"},
	{ERR_API, API_EIO, 500, "internal"},
	{ERR_API, API_ENOMEM, 500, "out_of_memory"},
	{ERR_STORE, STORE_ENOTFOUND, 404, "not_found"},
	{ERR_STORE, STORE_EEXISTS, 409, "conflict"},
	{ERR_STORE, STORE_EINVAL, 400, "bad_request"},
	{ERR_STORE, STORE_ECORRUPT, 500, "internal"},
	{ERR_STORE, STORE_ETOONEW, 500, "internal"},
	{ERR_STORE, STORE_EIO, 500, "internal"},
	{ERR_STORE, STORE_EBUSY, 503, "busy"},
	{ERR_STORE, STORE_ENOMEM, 500, "out_of_memory"},
	{ERR_STORE, STORE_EINTERNAL, 500, "internal"},
	{ERR_STORE, STORE_ESTALE, 503, "busy"},
	{ERR_CLIP, CLIP_EINVAL, 400, "bad_request"},
	{ERR_CLIP, CLIP_EIO, 500, "internal"},
	{ERR_CLIP, CLIP_EMODEL, 500, "internal"},
	{ERR_CLIP, CLIP_EIMAGE, 422, "undecodable_image"},
	{ERR_CLIP, CLIP_ETOOBIG, 413, "image_too_large"},
	{ERR_CLIP, CLIP_ETEXT, 400, "bad_text"},
	{ERR_CLIP, CLIP_ENOMEM, 500, "out_of_memory"},
	{ERR_CLIP, CLIP_ELIMIT, 422, "decode_limit"},
	{ERR_VIDX, VIDX_EINVAL, 400, "bad_request"},
	{ERR_VIDX, VIDX_EMISMATCH, 500, "internal"},
	{ERR_VIDX, VIDX_EFORMAT, 500, "internal"},
	{ERR_VIDX, VIDX_ECORRUPT, 500, "internal"},
	{ERR_VIDX, VIDX_ENOENT, 500, "internal"},
	{ERR_VIDX, VIDX_EIO, 500, "internal"},
	{ERR_VIDX, VIDX_ENOMEM, 500, "out_of_memory"},
	{ERR_VIDX, VIDX_ESTORE, 500, "internal"},
	{ERR_VIDX, VIDX_EFAISS, 500, "internal"},
};
#define NTABLE (sizeof table / sizeof *table)

/* The last code of each domain. */
static const int last_code[] = {API_ENOMEM, STORE_ESTALE, CLIP_ELIMIT, VIDX_EFAISS};

static const char *const secrets[] = {"/srv/clipd-data", "/opt/models/clip-vit"};

/* The JSON reply of err: its status, code string and message (copied into
 * msg). Returns 0 when the reply has exactly the documented shape. */
static int reply(const api_err *err, int *status, const char **code, char *msg, size_t size)
{
	*status = -1;
	*code = NULL;
	msg[0] = 0;
	json_t *j = api_err_json(err, status);
	if (!j)
		return -1;
	json_t *e = json_object_get(j, "error");
	json_t *c = json_object_get(e, "code"), *m = json_object_get(e, "message");
	int good = json_object_size(j) == 1 && json_object_size(e) == 2 && json_is_string(c) &&
	           json_is_string(m);
	if (good) {
		static char code_buf[64];
		snprintf(code_buf, sizeof code_buf, "%s", json_string_value(c));
		*code = code_buf;
		snprintf(msg, size, "%s", json_string_value(m));
	}
	/* The reply must survive the trip to text and back. */
	char *text = json_dumps(j, JSON_COMPACT);
	json_error_t je;
	json_t *back = text ? json_loads(text, 0, &je) : NULL;
	good = good && back && json_equal(j, back);
	json_decref(back);
	free(text);
	json_decref(j);
	return good ? 0 : -1;
}

static api_err mk(api_domain d, int code, const char *msg)
{
	api_err e;
	memset(&e, 0, sizeof e);
	e.domain = d;
	e.code = code;
	snprintf(e.msg, sizeof e.msg, "%s", msg);
	return e;
}

/* Every code of every module, from 0 to one past the last: the table's
 * status and name, 500 "internal" for a code it lacks. */
static void t_status_table(void)
{
	for (int d = ERR_API; d <= ERR_VIDX; d++) {
		for (int code = 0; code <= last_code[d] + 1; code++) {
			int status = 500;
			const char *name = "internal";
			for (size_t i = 0; i < NTABLE; i++)
				if ((int)table[i].domain == d && table[i].code == code) {
					status = table[i].status;
					name = table[i].name;
				}
			api_err e = mk((api_domain)d, code, "x");
			const char *got = NULL;
			int st = api_err_status(&e, &got);
			CHECKF(st == status && got && !strcmp(got, name),
			       "domain %d code %d: %d %s, expected %d %s", d, code, st, got ? got : "(null)",
			       status, name);
			CHECK(api_err_status(&e, NULL) == status);
		}
	}
	/* The documented table covers every code but OK. */
	size_t expected = 0;
	for (int d = ERR_API; d <= ERR_VIDX; d++)
		expected += (size_t)last_code[d];
	CHECKF(NTABLE == expected, "the test's table has %zu rows for %zu codes", NTABLE, expected);
}

/* The JSON reply for every row: the status and code string, the message
 * kept for 4xx and 503, the generic one otherwise. */
static void t_json_for_every_code(void)
{
	for (size_t i = 0; i < NTABLE; i++) {
		api_err e = mk(table[i].domain, table[i].code, "what went wrong: detail 42");
		int status;
		const char *code;
		char msg[512];
		int rc = reply(&e, &status, &code, msg, sizeof msg);
		CHECKF(rc == 0 && status == table[i].status && !strcmp(code, table[i].name),
		       "row %zu: %d %s", i, status, code ? code : "(null)");
		if (table[i].status < 500 || table[i].status == 503)
			CHECKF(!strcmp(msg, "what went wrong: detail 42"), "row %zu: message '%s'", i, msg);
		else
			CHECKF(!strcmp(msg, "internal server error (details are in the server log)"),
			       "row %zu (%d): message '%s' is not the generic one", i, table[i].status, msg);
	}
}

/* Server errors: the client gets the generic message, the log the full
 * one with its module and code. */
static void t_5xx_logged_in_full(void)
{
	char path[] = "/tmp/test_errors.log.XXXXXX";
	int fd = mkstemp(path);
	REQUIRE(fd >= 0);
	fflush(stderr);
	int saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	api_err e = mk(ERR_STORE, STORE_EIO, "disk I/O error on /srv/clipd-data/clipd.db");
	int status;
	const char *code;
	char msg[512];
	int rc = reply(&e, &status, &code, msg, sizeof msg);
	e = mk(ERR_VIDX, VIDX_EFAISS, "faiss said no");
	rc |= reply(&e, &status, &code, msg, sizeof msg);
	/* A 4xx is not logged. */
	e = mk(ERR_API, API_EBADREQ, "a client mistake");
	rc |= reply(&e, &status, &code, msg, sizeof msg);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	char log[4096] = "";
	ssize_t n = pread(fd, log, sizeof log - 1, 0);
	log[n > 0 ? n : 0] = 0;
	close(fd);
	unlink(path);
	CHECK(rc == 0);
	CHECKF(strstr(log, "error: store error 6: disk I/O error on /srv/clipd-data/clipd.db"),
	       "log: %s", log);
	CHECKF(strstr(log, "error: index error 9: faiss said no"), "log: %s", log);
	CHECKF(!strstr(log, "a client mistake"), "a 4xx was logged: %s", log);
}

/* Secret directories become "<dir>", every time they occur; strings of
 * one character or none are never secrets; at most eight are kept. */
static void t_secrets_scrubbed(void)
{
	api_err_set_secrets(secrets, 2);
	int status;
	const char *code;
	char msg[512];
	api_err e = mk(ERR_API, API_EFORBIDDEN,
	               "/srv/clipd-data/blobs/ab is not /opt/models/clip-vit/x nor /srv/clipd-data");
	CHECK(reply(&e, &status, &code, msg, sizeof msg) == 0 && status == 403);
	CHECKF(!strcmp(msg, "<dir>/blobs/ab is not <dir>/x nor <dir>"), "message '%s'", msg);
	/* A prefix of a secret is not it. */
	e = mk(ERR_API, API_EBADREQ, "/srv/clipd-dat and /opt/models/clip-vi");
	CHECK(reply(&e, &status, &code, msg, sizeof msg) == 0);
	CHECKF(!strcmp(msg, "/srv/clipd-dat and /opt/models/clip-vi"), "message '%s'", msg);
	/* Module messages (a store error quoting a path) are scrubbed alike,
	 * and 503 keeps its scrubbed message. */
	e = mk(ERR_STORE, STORE_EBUSY, "database /srv/clipd-data/clipd.db is locked");
	CHECK(reply(&e, &status, &code, msg, sizeof msg) == 0 && status == 503 && !strcmp(code, "busy"));
	CHECKF(!strcmp(msg, "database <dir>/clipd.db is locked"), "message '%s'", msg);

	/* "/" and "" would scrub every path or nothing: they are ignored. */
	const char *odd[] = {"/", "", NULL, "/data"};
	api_err_set_secrets(odd, 4);
	e = mk(ERR_API, API_EBADREQ, "/data/x and /y");
	CHECK(reply(&e, &status, &code, msg, sizeof msg) == 0);
	CHECKF(!strcmp(msg, "<dir>/x and /y"), "message '%s'", msg);

	/* Eight are kept, the ninth is not. */
	const char *many[] = {"/s1", "/s2", "/s3", "/s4", "/s5", "/s6", "/s7", "/s8", "/s9"};
	api_err_set_secrets(many, 9);
	e = mk(ERR_API, API_EBADREQ, "/s1 /s8 /s9");
	CHECK(reply(&e, &status, &code, msg, sizeof msg) == 0);
	CHECKF(!strcmp(msg, "<dir> <dir> /s9"), "message '%s'", msg);

	/* Set again: the old ones are gone. */
	api_err_set_secrets(secrets, 1);
	e = mk(ERR_API, API_EBADREQ, "/s1 /srv/clipd-data /opt/models/clip-vit");
	CHECK(reply(&e, &status, &code, msg, sizeof msg) == 0);
	CHECKF(!strcmp(msg, "/s1 <dir> /opt/models/clip-vit"), "message '%s'", msg);
	api_err_set_secrets(secrets, 2);
}

/* api_fail and the module wrappers: the code, the domain, the message
 * formatted and cut to the buffer at a character boundary. */
static void t_fail_and_wrap(void)
{
	api_err e;
	CHECK(api_fail(&e, API_ENOTFOUND, "no image %d", 42) == API_ENOTFOUND);
	CHECK(e.domain == ERR_API && e.code == API_ENOTFOUND && !strcmp(e.msg, "no image 42"));
	CHECK(api_fail(NULL, API_ECONFLICT, "ignored") == API_ECONFLICT);

	store_err se = {STORE_EEXISTS, "duplicate content"};
	CHECK(api_from_store(&e, &se) == STORE_EEXISTS);
	CHECK(e.domain == ERR_STORE && e.code == STORE_EEXISTS && !strcmp(e.msg, "duplicate content"));
	clip_err ce = {CLIP_ETOOBIG, "image of 9x9 pixels"};
	CHECK(api_from_clip(&e, &ce) == CLIP_ETOOBIG && e.domain == ERR_CLIP &&
	      !strcmp(e.msg, "image of 9x9 pixels"));
	vidx_err ve = {VIDX_EINVAL, "bad factory"};
	CHECK(api_from_vidx(&e, &ve) == VIDX_EINVAL && e.domain == ERR_VIDX &&
	      !strcmp(e.msg, "bad factory"));
	/* A module "error" without a code still fails the caller. */
	store_err ok0 = {STORE_OK, ""};
	CHECK(api_from_store(&e, &ok0) != 0);
	CHECK(api_from_store(NULL, &se) == STORE_EEXISTS);

	/* Cut inside a character: the message ends before it. */
	char big[600];
	size_t n = 0;
	memcpy(big, "xy", 2);
	n = 2;
	while (n + 2 < sizeof big) {
		memcpy(big + n, "\xc3\xa9", 2); /* é */
		n += 2;
	}
	big[n] = 0;
	api_fail(&e, API_EBADREQ, "%s", big);
	size_t len = strlen(e.msg);
	CHECKF(len == 254, "length %zu", len);
	CHECKF((unsigned char)e.msg[len - 1] == 0xa9, "ends with 0x%02x", (unsigned char)e.msg[len - 1]);
	/* Not UTF-8 from a module: repaired in the wrapper. */
	store_err bad = {STORE_EINVAL, "name \xff\xfe here"};
	api_from_store(&e, &bad);
	CHECKF(!strcmp(e.msg, "name \xef\xbf\xbd\xef\xbf\xbd here"), "message '%s'", e.msg);
}

/* Messages the JSON could not carry as they are: bytes that are not
 * UTF-8 put straight into the buffer, a secret growing the text past the
 * buffer, a secret cut by the buffer's end. The reply is still JSON. */
static void t_hostile_messages(void)
{
	int status;
	const char *code;
	char msg[1024];
	/* An overlong '/', a surrogate, a five-byte form, a cut sequence. */
	api_err e = mk(ERR_API, API_EBADREQ, "bad \xc0\xaf \xed\xa0\x80 \xf8\x88\x80\x80\x80 \xe2\x82");
	CHECK(reply(&e, &status, &code, msg, sizeof msg) == 0 && status == 400);
	CHECKF(!strcmp(msg, "bad \xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd "
	                    "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd "
	                    "\xef\xbf\xbd\xef\xbf\xbd"), "message '%s'", msg);

	/* Two-letter secrets make "<dir>" of five: 127 of them are 635 bytes. */
	const char *tiny[] = {"ab"};
	api_err_set_secrets(tiny, 1);
	e = mk(ERR_API, API_EBADREQ, "");
	for (int i = 0; i < 127; i++)
		memcpy(e.msg + 2 * i, "ab", 2);
	e.msg[254] = 0;
	CHECK(reply(&e, &status, &code, msg, sizeof msg) == 0 && status == 400);
	size_t len = strlen(msg);
	CHECKF(len > 250 && len < 320 && !strncmp(msg, "<dir><dir>", 10), "message of %zu bytes",
	       len);
	CHECKF(!strstr(msg, "ab"), "a secret shows: '%s'", msg);

	/* A message full of two-byte characters, grown by a secret so that the
	 * cut falls inside one. */
	const char *sec[] = {"/q"};
	api_err_set_secrets(sec, 1);
	e = mk(ERR_API, API_EBADREQ, "");
	size_t o = 0;
	for (int i = 0; i < 40; i++) {
		memcpy(e.msg + o, "/q", 2);
		o += 2;
	}
	while (o + 2 < sizeof e.msg) {
		memcpy(e.msg + o, "\xc3\xa9", 2);
		o += 2;
	}
	e.msg[o] = 0;
	CHECK(reply(&e, &status, &code, msg, sizeof msg) == 0);
	len = strlen(msg);
	CHECKF(len > 0 && len < 320 && (unsigned char)msg[len - 1] == 0xa9,
	       "message of %zu bytes ends with 0x%02x", len, len ? (unsigned char)msg[len - 1] : 0);
	api_err_set_secrets(secrets, 2);

	/* An empty message is still a reply. */
	e = mk(ERR_API, API_ENOTFOUND, "");
	CHECK(reply(&e, &status, &code, msg, sizeof msg) == 0 && status == 404 && msg[0] == 0);
}

int main(void)
{
	api_err_set_secrets(secrets, 2);
	TAP_RUN(t_status_table);
	TAP_RUN(t_json_for_every_code);
	TAP_RUN(t_5xx_logged_in_full);
	TAP_RUN(t_secrets_scrubbed);
	TAP_RUN(t_fail_and_wrap);
	TAP_RUN(t_hostile_messages);
	return tap_done();
}
