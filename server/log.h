/*
 * log: the daemon's one logger. One line per event on stderr:
 *   2025-01-31T12:00:00.123Z info: message
 * Thread-safe: a line is written with one write(2) call, so lines from
 * different threads never interleave. Nothing else in the server prints.
 */
#ifndef CLIPD_LOG_H
#define CLIPD_LOG_H

enum log_level {
	LOG_LVL_ERROR = 0,
	LOG_LVL_WARN = 1,
	LOG_LVL_INFO = 2,
	LOG_LVL_DEBUG = 3,
};

/* Sets the most verbose level written (default LOG_LVL_INFO). Call before
 * starting threads. */
void log_set_level(int level);

/* "error", "warn", "info", "debug" -> level; -1 for anything else. */
int log_level_parse(const char *name);

/* Whether a line at level would be written. */
int log_enabled(int level);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
