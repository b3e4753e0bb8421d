/*
 * test_config: server/config.c's config_parse with real files in a
 * temporary directory and the real environment (every CLIPD_ variable is
 * cleared before each case and set only for it): the defaults, the
 * precedence command line > environment > config file for a value, a
 * flag and the key (the key and the key file are one setting), the
 * directory lists where the strongest source that names any directory
 * wins whole, every integer option's range with the error naming the
 * option in each source's spelling ("--workers", "CLIPD_WORKERS",
 * "FILE:LINE: workers"), the other value and file errors, and --help.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "tap.h"

extern char **environ;

static char tmp[256];
static char conf[300];       /* tmp/clipd.conf */
static char dir_a[300], dir_b[300], dir_c[300]; /* real paths of tmp/a, tmp/b, tmp/c */
static char msg[1024];

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(1);
	}
	fputs(text, f);
	fclose(f);
}

/* Writes the config file from a format. */
static void conf_file(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void conf_file(const char *fmt, ...)
{
	char text[8192];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	write_file(conf, text);
}

/* Unsets every CLIPD_ variable. */
static void clear_env(void)
{
	for (;;) {
		char name[256] = "";
		for (char **e = environ; *e; e++)
			if (!strncmp(*e, "CLIPD_", 6)) {
				snprintf(name, sizeof name, "%.*s", (int)strcspn(*e, "="), *e);
				break;
			}
		if (!name[0])
			return;
		unsetenv(name);
	}
}

/* config_parse on "clipd" and the NULL-terminated args; msg is cleared. */
static int parse(config *cfg, const char *const *args)
{
	char *argv[256];
	int argc = 0;
	argv[argc++] = "clipd";
	for (; *args; args++)
		argv[argc++] = (char *)*args;
	argv[argc] = NULL;
	msg[0] = 0;
	return config_parse(cfg, argc, argv, stdout, msg, sizeof msg);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void setup(void)
{
	snprintf(tmp, sizeof tmp, "/tmp/test_config.XXXXXX");
	if (!mkdtemp(tmp)) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(conf, sizeof conf, "%s/clipd.conf", tmp);
	char p[400];
	char *real;
	const char *names[] = {"a", "b", "c"};
	char *dirs[] = {dir_a, dir_b, dir_c};
	for (int i = 0; i < 3; i++) {
		snprintf(p, sizeof p, "%s/%s", tmp, names[i]);
		mkdir(p, 0700);
		real = realpath(p, NULL);
		if (!real)
			exit(1);
		snprintf(dirs[i], sizeof dir_a, "%s", real);
		free(real);
	}
	clear_env();
}

static void teardown(void)
{
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmp);
}

/* Only --model and --data: every default. */
static void t_defaults(void)
{
	clear_env();
	config c;
	int rc = parse(&c, ARGS("--model", "m", "--data", "d"));
	REQUIRE(rc == 0);
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	if (cores < 1)
		cores = 1;
	CHECK(!strcmp(c.model_dir, "m") && !strcmp(c.data_dir, "d"));
	CHECK(!strcmp(c.listen, "127.0.0.1:8080") && !strcmp(c.listen_host, "127.0.0.1") &&
	      c.listen_port == 8080);
	CHECK(c.api_key == NULL && c.api_key_reads == 0 && c.fast_decode == 0);
	CHECK(c.workers == (cores / 2 > 0 ? cores / 2 : 1));
	CHECK(c.batch == 16 && c.encoders == 2);
	CHECK(c.max_body == (int64_t)64 << 20 && c.max_pixels == 100000000 && c.max_queue == 100000);
	CHECK(c.timeout_s == 30 && c.header_timeout_s == 10);
	CHECK(c.max_conns == 1024 && c.max_conns_per_ip == 64);
	CHECK(c.rescan_s == 300 && c.wait_max_s == 60);
	CHECK(c.thumb_cache_bytes == (int64_t)512 << 20 && c.thumb_wait_ms == 10000);
	CHECK(c.max_decodes == (cores > 2 ? cores : 2) && c.decode_wait_ms == 5000);
	CHECK(!strcmp(c.index_factory, "auto") && c.precision == CLIP_PRECISION_AUTO);
	CHECK(c.log_level == 2); /* info */
	CHECK(c.n_allow_roots == 0 && c.n_watch_dirs == 0 && c.n_allow_hosts == 0 &&
	      c.n_allow_origins == 0);
	config_free(&c);
	config_free(&c); /* twice is harmless: config_free zeroes */

	/* --model and --data are required, from any source. */
	rc = parse(&c, ARGS("--data", "d"));
	CHECK(rc == -1 && strstr(msg, "--model DIR and --data DIR are required"));
	config_free(&c);
	setenv("CLIPD_MODEL", "em", 1);
	setenv("CLIPD_DATA", "ed", 1);
	rc = parse(&c, ARGS("--workers", "1"));
	CHECK(rc == 0 && !strcmp(c.model_dir, "em") && !strcmp(c.data_dir, "ed"));
	config_free(&c);
	clear_env();
}

/* A value in all three sources, then in two, then in one. */
static void t_precedence_value(void)
{
	clear_env();
	config c;
	conf_file("model = fm\ndata = /fd\nworkers = 3\nbatch = 7\nindex = hnsw\n");
	setenv("CLIPD_WORKERS", "4", 1);
	setenv("CLIPD_INDEX", "ivfpq", 1);
	setenv("CLIPD_MODEL", "/em", 1);
	int rc = parse(&c, ARGS("--config", conf, "--workers", "5", "--model=/cm"));
	CHECKF(rc == 0, "%s", msg);
	CHECK(c.workers == 5 && !strcmp(c.model_dir, "/cm"));
	CHECK(!strcmp(c.index_factory, "ivfpq") && c.batch == 7 && !strcmp(c.data_dir, "/fd"));
	config_free(&c);

	rc = parse(&c, ARGS("--config", conf));
	CHECKF(rc == 0 && c.workers == 4 && !strcmp(c.model_dir, "/em"), "%s", msg);
	config_free(&c);

	unsetenv("CLIPD_WORKERS");
	unsetenv("CLIPD_MODEL");
	rc = parse(&c, ARGS("--config", conf));
	char want[400];
	snprintf(want, sizeof want, "%s/fm", tmp); /* relative to the file's folder */
	CHECKF(rc == 0 && c.workers == 3 && !strcmp(c.model_dir, want), "%s / %s", msg,
	       rc == 0 ? c.model_dir : "");
	config_free(&c);

	/* The config file itself from the environment; a later flag on the
	 * command line wins over an earlier one. */
	setenv("CLIPD_CONFIG", conf, 1);
	rc = parse(&c, ARGS("--batch", "9", "--batch", "10"));
	CHECKF(rc == 0 && c.batch == 10 && c.workers == 3, "%s", msg);
	config_free(&c);

	/* An empty variable is unset (but for the key, see t_key). */
	setenv("CLIPD_WORKERS", "", 1);
	rc = parse(&c, ARGS("--model", "m"));
	CHECKF(rc == 0 && c.workers == 3 && !strcmp(c.model_dir, "m"), "%s", msg);
	config_free(&c);
	clear_env();
}

/* Flags: true/false words in the file, 1/0 in the environment, bare on
 * the command line. */
static void t_precedence_flags(void)
{
	clear_env();
	config c;
	static const char *const yes[] = {"true", "yes", "on", "1", "TRUE", "On"};
	static const char *const no[] = {"false", "no", "off", "0", "False", "NO"};
	for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
		conf_file("model = m\ndata = d\nfast-decode = %s\napi-key = k\napi-key-reads = %s\n",
		          yes[i], yes[i]);
		int rc = parse(&c, ARGS("--config", conf));
		CHECKF(rc == 0 && c.fast_decode == 1 && c.api_key_reads == 1, "'%s': %s", yes[i], msg);
		config_free(&c);
		conf_file("model = m\ndata = d\nfast-decode = %s\n", no[i]);
		rc = parse(&c, ARGS("--config", conf));
		CHECKF(rc == 0 && c.fast_decode == 0, "'%s': %s", no[i], msg);
		config_free(&c);
	}
	conf_file("model = m\ndata = d\nfast-decode = true\n");
	setenv("CLIPD_FAST_DECODE", "0", 1);
	int rc = parse(&c, ARGS("--config", conf));
	CHECKF(rc == 0 && c.fast_decode == 0, "environment 0 over the file's true: %s", msg);
	config_free(&c);
	rc = parse(&c, ARGS("--config", conf, "--fast-decode"));
	CHECKF(rc == 0 && c.fast_decode == 1, "the flag over the environment's 0: %s", msg);
	config_free(&c);
	setenv("CLIPD_FAST_DECODE", "1", 1);
	rc = parse(&c, ARGS("--model", "m", "--data", "d"));
	CHECK(rc == 0 && c.fast_decode == 1);
	config_free(&c);

	conf_file("fast-decode = maybe\n");
	rc = parse(&c, ARGS("--config", conf));
	char want[600];
	snprintf(want, sizeof want, "%s:1: fast-decode: 'maybe' is not true or false", conf);
	CHECKF(rc == -1 && !strcmp(msg, want), "'%s'", msg);
	config_free(&c);
	clear_env();
}

/* The key: the stronger source wins between key and key file; in one
 * source both is an error; an empty key or one with spaces at its ends is
 * refused wherever it comes from. */
static void t_key(void)
{
	clear_env();
	config c;
	char kf[400], want[800];
	snprintf(kf, sizeof kf, "%s/key.txt", tmp);
	write_file(kf, "from-file\r\nsecond line\n");
	conf_file("model = m\ndata = d\napi-key = conf-key\n");

	int rc = parse(&c, ARGS("--config", conf));
	CHECK(rc == 0 && c.api_key && !strcmp(c.api_key, "conf-key"));
	config_free(&c);
	setenv("CLIPD_API_KEY", "env-key", 1);
	rc = parse(&c, ARGS("--config", conf));
	CHECK(rc == 0 && c.api_key && !strcmp(c.api_key, "env-key"));
	config_free(&c);
	rc = parse(&c, ARGS("--config", conf, "--api-key", "cli-key"));
	CHECK(rc == 0 && c.api_key && !strcmp(c.api_key, "cli-key"));
	config_free(&c);
	/* A key file on the command line beats the key of the environment. */
	rc = parse(&c, ARGS("--config", conf, "--api-key-file", kf));
	CHECKF(rc == 0 && c.api_key && !strcmp(c.api_key, "from-file"), "%s", msg);
	config_free(&c);
	/* A key file in the environment beats the file's key... */
	unsetenv("CLIPD_API_KEY");
	setenv("CLIPD_API_KEY_FILE", kf, 1);
	rc = parse(&c, ARGS("--config", conf));
	CHECKF(rc == 0 && c.api_key && !strcmp(c.api_key, "from-file"), "%s", msg);
	config_free(&c);
	/* ...and loses to a key on the command line. */
	rc = parse(&c, ARGS("--config", conf, "--api-key", "cli-key"));
	CHECKF(rc == 0 && c.api_key && !strcmp(c.api_key, "cli-key"), "%s", msg);
	config_free(&c);
	/* Both in one source: an error naming both. */
	setenv("CLIPD_API_KEY", "env-key", 1);
	rc = parse(&c, ARGS("--model", "m", "--data", "d"));
	CHECKF(rc == -1 && !strcmp(msg, "give api-key or api-key-file, not both (CLIPD_API_KEY; "
	                                "CLIPD_API_KEY_FILE)"), "'%s'", msg);
	config_free(&c);
	clear_env();
	rc = parse(&c, ARGS("--model", "m", "--data", "d", "--api-key", "a", "--api-key-file", kf));
	CHECKF(rc == -1 && !strcmp(msg, "give --api-key or --api-key-file, not both"), "'%s'", msg);
	config_free(&c);

	/* Empty keys and keys with spaces at an end, from each source. */
	setenv("CLIPD_API_KEY", "", 1);
	rc = parse(&c, ARGS("--model", "m", "--data", "d"));
	CHECKF(rc == -1 && strstr(msg, "CLIPD_API_KEY: the API key is empty"), "'%s'", msg);
	config_free(&c);
	clear_env();
	rc = parse(&c, ARGS("--model", "m", "--data", "d", "--api-key", " k"));
	CHECKF(rc == -1 && strstr(msg, "--api-key: the API key starts or ends with a space"), "'%s'",
	       msg);
	config_free(&c);
	rc = parse(&c, ARGS("--model", "m", "--data", "d", "--api-key="));
	CHECKF(rc == -1 && strstr(msg, "--api-key: the API key is empty"), "'%s'", msg);
	config_free(&c);
	write_file(kf, "key-with-space \n");
	rc = parse(&c, ARGS("--model", "m", "--data", "d", "--api-key-file", kf));
	snprintf(want, sizeof want, "--api-key-file (the first line of %s): the API key starts or "
	         "ends with a space", kf);
	CHECKF(rc == -1 && strstr(msg, want), "'%s'", msg);
	config_free(&c);
	write_file(kf, "");
	rc = parse(&c, ARGS("--model", "m", "--data", "d", "--api-key-file", kf));
	snprintf(want, sizeof want, "--api-key-file: %s is empty", kf);
	CHECKF(rc == -1 && !strcmp(msg, want), "'%s'", msg);
	config_free(&c);
	write_file(kf, "\n");
	rc = parse(&c, ARGS("--model", "m", "--data", "d", "--api-key-file", kf));
	CHECKF(rc == -1 && strstr(msg, "the API key is empty"), "'%s'", msg);
	config_free(&c);
	unlink(kf);
	rc = parse(&c, ARGS("--model", "m", "--data", "d", "--api-key-file", kf));
	snprintf(want, sizeof want, "--api-key-file: cannot open %s: No such file or directory", kf);
	CHECKF(rc == -1 && !strcmp(msg, want), "'%s'", msg);
	config_free(&c);
	setenv("CLIPD_API_KEY_FILE", "", 1);
	rc = parse(&c, ARGS("--model", "m", "--data", "d"));
	CHECKF(rc == -1 && strstr(msg, "CLIPD_API_KEY_FILE: no file named"), "'%s'", msg);
	config_free(&c);
	clear_env();
	conf_file("model = m\ndata = d\napi-key = \"\"\n");
	rc = parse(&c, ARGS("--config", conf));
	snprintf(want, sizeof want, "%s:3: api-key has no value", conf);
	CHECKF(rc == -1 && !strcmp(msg, want), "'%s'", msg);
	config_free(&c);

	/* --api-key-reads needs a key. */
	rc = parse(&c, ARGS("--model", "m", "--data", "d", "--api-key-reads"));
	CHECKF(rc == -1 && !strcmp(msg, "--api-key-reads needs an API key (api-key or api-key-file)"),
	       "'%s'", msg);
	config_free(&c);
	rc = parse(&c, ARGS("--model", "m", "--data", "d", "--api-key-reads", "--api-key", "k"));
	CHECK(rc == 0 && c.api_key_reads == 1);
	config_free(&c);
}

/* allow-root and watch: the strongest source that names any directory
 * wins whole; relative paths in the file are taken from its folder; the
 * environment's list is colon-separated. */
static void t_lists(void)
{
	clear_env();
	config c;
	conf_file("model = m\ndata = d\nallow-root = a\nallow-root = %s\nwatch = c\n", dir_b);
	int rc = parse(&c, ARGS("--config", conf));
	REQUIRE(rc == 0);
	CHECK(c.n_allow_roots == 2 && !strcmp(c.allow_roots[0], dir_a) &&
	      !strcmp(c.allow_roots[1], dir_b));
	char given[400];
	snprintf(given, sizeof given, "%s/a", tmp);
	CHECKF(c.n_allow_roots == 2 && !strcmp(c.allow_roots_given[0], given),
	       "given as '%s'", c.n_allow_roots ? c.allow_roots_given[0] : "");
	CHECK(c.n_watch_dirs == 1 && !strcmp(c.watch_dirs[0], dir_c));
	config_free(&c);

	/* The environment replaces the file's list, not the other list. */
	char env[700];
	snprintf(env, sizeof env, "%s:%s", dir_c, dir_a);
	setenv("CLIPD_ALLOW_ROOT", env, 1);
	rc = parse(&c, ARGS("--config", conf));
	CHECKF(rc == 0 && c.n_allow_roots == 2 && !strcmp(c.allow_roots[0], dir_c) &&
	       !strcmp(c.allow_roots[1], dir_a), "%s", msg);
	CHECK(rc == 0 && c.n_watch_dirs == 1 && !strcmp(c.watch_dirs[0], dir_c));
	config_free(&c);

	/* The command line replaces both, with as many entries as it gives. */
	setenv("CLIPD_WATCH", dir_a, 1);
	rc = parse(&c, ARGS("--config", conf, "--allow-root", dir_b, "--watch", dir_b, "--watch",
	                    dir_c));
	CHECKF(rc == 0 && c.n_allow_roots == 1 && !strcmp(c.allow_roots[0], dir_b), "%s", msg);
	CHECK(rc == 0 && c.n_watch_dirs == 2 && !strcmp(c.watch_dirs[0], dir_b) &&
	      !strcmp(c.watch_dirs[1], dir_c));
	config_free(&c);
	rc = parse(&c, ARGS("--config", conf));
	CHECK(rc == 0 && c.n_watch_dirs == 1 && !strcmp(c.watch_dirs[0], dir_a));
	config_free(&c);
	clear_env();

	/* A directory that does not exist is named with its source. */
	char want[800];
	conf_file("model = m\ndata = d\nallow-root = a\nallow-root = nope\n");
	rc = parse(&c, ARGS("--config", conf));
	snprintf(want, sizeof want, "%s:4: allow-root: %s/nope: No such file or directory", conf, tmp);
	CHECKF(rc == -1 && !strcmp(msg, want), "'%s'", msg);
	config_free(&c);
	/* ...but not when a stronger source replaces the list. */
	rc = parse(&c, ARGS("--config", conf, "--allow-root", dir_a));
	CHECKF(rc == 0 && c.n_allow_roots == 1, "%s", msg);
	config_free(&c);
	setenv("CLIPD_WATCH", "/no/such/dir", 1);
	rc = parse(&c, ARGS("--model", "m", "--data", "d"));
	CHECKF(rc == -1 && !strcmp(msg, "CLIPD_WATCH: /no/such/dir: No such file or directory"),
	       "'%s'", msg);
	config_free(&c);
	clear_env();

	/* At most 64 directories per list and source. */
	const char *args[140];
	int n = 0;
	args[n++] = "--model";
	args[n++] = "m";
	args[n++] = "--data";
	args[n++] = "d";
	for (int i = 0; i < 65; i++) {
		args[n++] = "--allow-root";
		args[n++] = dir_a;
	}
	args[n] = NULL;
	rc = parse(&c, args);
	CHECKF(rc == -1 && !strcmp(msg, "--allow-root: more than 64 directories"), "'%s'", msg);
	config_free(&c);
	args[n - 2] = NULL; /* 64 of them */
	rc = parse(&c, args);
	CHECKF(rc == 0 && c.n_allow_roots == 64, "%s", msg);
	config_free(&c);
}

/* Each integer option: its lowest and highest values are taken, one
 * below and one above are refused with a message naming the option as
 * its source spells it. */
static void t_int_ranges(void)
{
	static const struct {
		const char *name, *env;
		long long min, max;
	} opts[] = {
		{"workers", "CLIPD_WORKERS", 1, 256},
		{"batch", "CLIPD_BATCH", 1, 256},
		{"encoders", "CLIPD_ENCODERS", 1, 64},
		{"max-body-mb", "CLIPD_MAX_BODY_MB", 1, 1 << 20},
		{"max-pixels", "CLIPD_MAX_PIXELS", 1, INT64_MAX / 2},
		{"max-queue", "CLIPD_MAX_QUEUE", 1, INT64_MAX / 2},
		{"timeout", "CLIPD_TIMEOUT", 1, 3600},
		{"header-timeout", "CLIPD_HEADER_TIMEOUT", 1, 3600},
		{"max-connections", "CLIPD_MAX_CONNECTIONS", 1, 100000},
		{"max-connections-per-ip", "CLIPD_MAX_CONNECTIONS_PER_IP", 1, 100000},
		{"rescan-seconds", "CLIPD_RESCAN_SECONDS", 1, 86400},
		{"thumb-cache-mb", "CLIPD_THUMB_CACHE_MB", 1, 1 << 24},
		{"thumb-wait-ms", "CLIPD_THUMB_WAIT_MS", 0, 600000},
		{"max-decodes", "CLIPD_MAX_DECODES", 1, 1024},
		{"decode-wait-ms", "CLIPD_DECODE_WAIT_MS", 0, 600000},
		{"migration-pause-ms", "CLIPD_MIGRATION_PAUSE_MS", 0, 60000},
	};
	clear_env();
	config c;
	char flag[64], v[64], want[800];
	for (size_t i = 0; i < sizeof opts / sizeof *opts; i++) {
		snprintf(flag, sizeof flag, "--%s", opts[i].name);
		long long ok_vals[] = {opts[i].min, opts[i].max};
		for (int k = 0; k < 2; k++) {
			snprintf(v, sizeof v, "%lld", ok_vals[k]);
			int rc = parse(&c, ARGS("--model", "m", "--data", "d", flag, v));
			CHECKF(rc == 0, "%s %s: %s", flag, v, msg);
			config_free(&c);
		}
		const char *bad[] = {NULL, NULL, "12x", "", "1.5", "0x10", "99999999999999999999"};
		char lo[32], hi[32];
		snprintf(lo, sizeof lo, "%lld", opts[i].min - 1);
		snprintf(hi, sizeof hi, "%lld", opts[i].max + 1);
		bad[0] = lo;
		bad[1] = hi;
		for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
			/* The command line. */
			int rc = parse(&c, ARGS("--model", "m", "--data", "d", flag, bad[k]));
			snprintf(want, sizeof want, "%s: '%s' is not an integer from %lld to %lld", flag,
			         bad[k], opts[i].min, opts[i].max);
			CHECKF(rc == -1 && !strcmp(msg, want), "%s '%s': '%s'", flag, bad[k], msg);
			config_free(&c);
			if (!*bad[k])
				continue; /* empty: unset in the environment, no value in a file */
			/* The environment. */
			setenv(opts[i].env, bad[k], 1);
			rc = parse(&c, ARGS("--model", "m", "--data", "d"));
			snprintf(want, sizeof want, "%s: '%s' is not an integer from %lld to %lld",
			         opts[i].env, bad[k], opts[i].min, opts[i].max);
			CHECKF(rc == -1 && !strcmp(msg, want), "%s='%s': '%s'", opts[i].env, bad[k], msg);
			config_free(&c);
			/* ...which the command line overrides. */
			snprintf(v, sizeof v, "%lld", opts[i].max);
			rc = parse(&c, ARGS("--model", "m", "--data", "d", flag, v));
			CHECKF(rc == 0, "%s %s over %s: %s", flag, v, opts[i].env, msg);
			config_free(&c);
			unsetenv(opts[i].env);
			/* The config file, by its line. */
			conf_file("model = m\ndata = d\n%s = %s\n", opts[i].name, bad[k]);
			rc = parse(&c, ARGS("--config", conf));
			snprintf(want, sizeof want, "%s:3: %s: '%s' is not an integer from %lld to %lld",
			         conf, opts[i].name, bad[k], opts[i].min, opts[i].max);
			CHECKF(rc == -1 && !strcmp(msg, want), "file '%s': '%s'", bad[k], msg);
			config_free(&c);
		}
	}
	/* The values in force, scaled where the option is in MiB. */
	int rc = parse(&c, ARGS("--model", "m", "--data", "d", "--max-body-mb", "3",
	                        "--thumb-cache-mb", "5", "--workers", "7", "--max-pixels", "1234"));
	CHECK(rc == 0 && c.max_body == 3 << 20 && c.thumb_cache_bytes == 5 << 20 && c.workers == 7 &&
	      c.max_pixels == 1234);
	config_free(&c);
}

/* The other values with a syntax: listen, precision, log level, host
 * names and origins. */
static void t_value_errors(void)
{
	clear_env();
	config c;
	static const struct {
		const char *flag, *value, *msg;
	} cases[] = {
		{"--listen", "8080", "--listen: '8080' is not HOST:PORT"},
		{"--listen", ":80", "--listen: ':80' is not HOST:PORT"},
		{"--listen", "localhost:80", "--listen: 'localhost' is not a numeric IPv4 or IPv6 address"},
		{"--listen", "127.0.0.1:65536", "--listen: '65536' is not an integer from 0 to 65535"},
		{"--listen", "127.0.0.1:", "--listen: '' is not an integer from 0 to 65535"},
		{"--listen", "1111111111111111111111111111111111111111111111111111111111111111:1",
		 "--listen: host is too long"}, /* 64 characters, its buffer's size */
		{"--precision", "fp16", "--precision: 'fp16' is not auto, f32, bf16 or int8"},
		{"--log-level", "verbose", "--log-level: 'verbose' is not error, warn, info or debug"},
		{"--allow-host", "a,,b", "--allow-host: an empty or over-long name in 'a,,b'"},
		{"--allow-host", "a b", "--allow-host: 'a b' is not a host name"},
		{"--allow-host", "x/y", "--allow-host: 'x/y' is not a host name"},
		{"--allow-origin", "example.com", "--allow-origin: 'example.com' is not an origin "
		 "(http://host[:port])"},
		{"--allow-origin", "http://a b", "--allow-origin: 'http://a b' is not a"},
		{"--allow-origin", "HTTP://b", "--allow-origin: 'HTTP://b' is not an origin "
		 "(http://host[:port])"},
	};
	/* Each message starts as given (the rest says what is allowed). */
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		int rc = parse(&c, ARGS("--model", "m", "--data", "d", cases[i].flag, cases[i].value));
		CHECKF(rc == -1 && !strncmp(msg, cases[i].msg, strlen(cases[i].msg)), "%s '%s': '%s'",
		       cases[i].flag, cases[i].value, msg);
		config_free(&c);
	}
	/* And what they accept. */
	int rc = parse(&c, ARGS("--model", "m", "--data", "d", "--listen", "[::1]:0", "--precision",
	                        "int8", "--log-level", "debug", "--allow-host", " Photos.LAN , nas "));
	CHECKF(rc == 0, "%s", msg);
	if (rc == 0) {
		CHECK(!strcmp(c.listen_host, "::1") && c.listen_port == 0);
		CHECK(c.precision == CLIP_PRECISION_INT8 && c.log_level == 3);
		CHECK(c.n_allow_hosts == 2 && !strcmp(c.allow_hosts[0], "photos.lan") &&
		      !strcmp(c.allow_hosts[1], "nas"));
	}
	config_free(&c);
	rc = parse(&c, ARGS("--model", "m", "--data", "d", "--allow-origin",
	                    "http://Example.com:8443,https://b"));
	CHECK(rc == 0 && c.n_allow_origins == 2 && !strcmp(c.allow_origins[0], "http://example.com:8443")
	      && !strcmp(c.allow_origins[1], "https://b"));
	config_free(&c);
	/* Errors of the environment are named by the variable. */
	setenv("CLIPD_LISTEN", "nowhere", 1);
	rc = parse(&c, ARGS("--model", "m", "--data", "d"));
	CHECKF(rc == -1 && !strcmp(msg, "CLIPD_LISTEN: 'nowhere' is not HOST:PORT"), "'%s'", msg);
	config_free(&c);
	clear_env();
	/* The command line itself. */
	rc = parse(&c, ARGS("--model", "m", "--data", "d", "--bogus", "1"));
	CHECKF(rc == -1 && !strcmp(msg, "unknown option '--bogus' (see --help)"), "'%s'", msg);
	config_free(&c);
	rc = parse(&c, ARGS("--model", "m", "--data", "d", "stray"));
	CHECKF(rc == -1 && !strcmp(msg, "unexpected argument 'stray' (see --help)"), "'%s'", msg);
	config_free(&c);
	rc = parse(&c, ARGS("--model", "m", "--data"));
	CHECKF(rc == -1 && !strcmp(msg, "--data needs a value"), "'%s'", msg);
	config_free(&c);
	rc = parse(&c, ARGS("--model", "m", "--data", "d", "--work", "1"));
	CHECKF(rc == -1 && strstr(msg, "unknown option '--work'"), "a prefix is not the option: '%s'",
	       msg);
	config_free(&c);
}

/* The config file's own syntax errors, each naming the file and line. */
static void t_file_errors(void)
{
	clear_env();
	config c;
	static const struct {
		const char *text, *msg;
	} cases[] = {
		{"# ok\nmodel = m\nmodle = x\n", "%s:3: unknown key 'modle' (keys are the option names "
		 "of clipd --help, without the dashes)"},
		{"help = true\n", "%s:1: unknown key 'help' (keys are the option names of clipd --help, "
		 "without the dashes)"},
		{"config = other.conf\n", "%s:1: 'config' cannot be set in a config file"},
		{"\n\nlisten 127.0.0.1:0\n", "%s:3: expected \"key = value\", got \"listen 127.0.0.1:0\""},
		{"workers = 1\nworkers = 2\n", "%s:2: workers: set twice (first on line 1)"},
		{"workers =   \n", "%s:1: workers has no value"},
		{"api-key-reads = maybe\n", "%s:1: api-key-reads: 'maybe' is not true or false"},
		{"model = m\ndata = d\nlisten = localhost:80\n",
		 "%s:3: listen: 'localhost' is not a numeric IPv4 or IPv6 address"},
		{"model = m\ndata = d\nprecision = 'half'\n",
		 "%s:3: precision: 'half' is not auto, f32, bf16 or int8"},
	};
	char want[1200];
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		write_file(conf, cases[i].text);
		int rc = parse(&c, ARGS("--config", conf));
		snprintf(want, sizeof want, cases[i].msg, conf);
		CHECKF(rc == -1 && !strcmp(msg, want), "case %zu: '%s'", i, msg);
		config_free(&c);
	}
	/* Comments, blank lines, spaces and quotes are fine. */
	write_file(conf, "# comment\n\n   \n  model = \"/q m\"  \n\tdata='/d'\nworkers=2\n");
	int rc = parse(&c, ARGS("--config", conf));
	CHECKF(rc == 0 && !strcmp(c.model_dir, "/q m") && !strcmp(c.data_dir, "/d") && c.workers == 2,
	       "%s", msg);
	config_free(&c);
	/* A missing file, named by the option that gave it. */
	char missing[400];
	snprintf(missing, sizeof missing, "%s/missing.conf", tmp);
	rc = parse(&c, ARGS("--config", missing));
	snprintf(want, sizeof want, "--config: cannot open %s: No such file or directory", missing);
	CHECKF(rc == -1 && !strcmp(msg, want), "'%s'", msg);
	config_free(&c);
	setenv("CLIPD_CONFIG", missing, 1);
	rc = parse(&c, ARGS("--model", "m"));
	snprintf(want, sizeof want, "CLIPD_CONFIG: cannot open %s: No such file or directory", missing);
	CHECKF(rc == -1 && !strcmp(msg, want), "'%s'", msg);
	config_free(&c);
	clear_env();
	/* A directory is not a config file. */
	rc = parse(&c, ARGS("--config", tmp));
	CHECKF(rc == -1 && strstr(msg, "--config: cannot read"), "'%s'", msg);
	config_free(&c);
}

/* --help: every option and the precedence printed to out, return 1, the
 * other settings not even read. */
static void t_help(void)
{
	clear_env();
	static const char *const names[] = {
		"config", "model", "data", "old-model", "listen", "api-key", "api-key-file", "api-key-reads",
		"workers", "batch", "encoders", "index", "allow-root", "watch", "rescan-seconds",
		"max-body-mb", "max-pixels", "max-queue", "timeout", "header-timeout",
		"max-connections", "max-connections-per-ip", "allow-host", "allow-origin",
		"thumb-cache-mb", "thumb-wait-ms", "max-decodes", "decode-wait-ms",
		"migration-pause-ms", "fast-decode", "precision", "log-level", "help",
	};
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	REQUIRE(out);
	config c;
	char *argv[] = {"clipd", "--workers", "0", "--help", NULL};
	setenv("CLIPD_BATCH", "nope", 1);
	int rc = config_parse(&c, 4, argv, out, msg, sizeof msg);
	fclose(out);
	config_free(&c);
	CHECKF(rc == 1, "rc %d: %s", rc, msg);
	CHECK(text && strstr(text, "usage: clipd --model DIR --data DIR [options]"));
	CHECK(text && strstr(text, "The command line wins over the environment, which wins\nover "
	                           "the config file, which wins over the defaults."));
	for (size_t i = 0; text && i < sizeof names / sizeof *names; i++) {
		char opt[64];
		snprintf(opt, sizeof opt, "\n  --%s ", names[i]);
		CHECKF(strstr(text, opt), "--help does not list --%s", names[i]);
	}
	free(text);
	/* An unknown option is still an error, help or not. */
	char *argv2[] = {"clipd", "--help", "--bogus", NULL};
	rc = config_parse(&c, 3, argv2, stdout, msg, sizeof msg);
	CHECK(rc == -1 && strstr(msg, "unknown option '--bogus'"));
	config_free(&c);
	clear_env();
}

int main(void)
{
	setup();
	TAP_RUN(t_defaults);
	TAP_RUN(t_precedence_value);
	TAP_RUN(t_precedence_flags);
	TAP_RUN(t_key);
	TAP_RUN(t_lists);
	TAP_RUN(t_int_ranges);
	TAP_RUN(t_value_errors);
	TAP_RUN(t_file_errors);
	TAP_RUN(t_help);
	int rc = tap_done();
	teardown();
	return rc;
}
