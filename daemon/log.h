/*
 * log - ipcd's log lines on stderr: "ipcd: LEVEL: message".  Nothing per
 * message above debug; never payloads.
 */
#ifndef LOG_H
#define LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern enum log_level log_max;

/* Parse "error", "warn", "info" or "debug"; -1 when it is none. */
int log_parse_level(const char *s);
/* At start: a pipe or socket on stderr is written without blocking (a
 * pipe through our own opening of it, a socket with MSG_DONTWAIT), so a
 * log reader that falls behind costs log lines, never the broker's time.
 * Lines above debug are also held to 100 a second (a burst of 200); what
 * is left out is counted and said. */
void log_init(void);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) \
	do { if (log_max >= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__); } \
	while (0)

#endif
