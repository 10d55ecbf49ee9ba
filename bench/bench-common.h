/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Helpers shared by the benchmark programs: sizes, a fixed-seed
 * generator, a monotonic clock, an NBD connection and a minimal QMP
 * client.  Benchmarks only: they exit on errors they cannot report.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libnbd.h>

/* "4096", "64K", "1G", "1T" (powers of 1024).  -1 if malformed. */
extern int parse_size (const char *s, uint64_t *ret);

/* splitmix64: a fixed seed gives the same sequence on every run. */
extern void rng_seed (uint64_t seed);
extern uint64_t rng_next (void);

extern uint64_t now_ns (void);

/* Connect to a Unix socket path or an NBD URI; NULL (message printed)
 * on error.
 */
extern struct nbd_handle *bench_nbd_connect (const char *target);

/* A QMP connection: greeting read and qmp_capabilities done. */
struct qmp;
extern struct qmp *qmp_connect (const char *path);
extern void qmp_close (struct qmp *q);
/* Send one command (a JSON object, no newline) and wait for its answer,
 * skipping events.  Returns the answer line (valid until the next
 * call); *IS_ERROR tells whether it is an error object.  NULL if the
 * connection broke.
 */
extern const char *qmp_execute (struct qmp *q, const char *cmd,
                                bool *is_error);
/* Like qmp_execute, but exit with a message on an error answer. */
extern const char *qmp_must (struct qmp *q, const char *cmd);

/* VmRSS and VmHWM of PID in KiB (0 if unreadable). */
extern void proc_rss (int pid, uint64_t *rss_kib, uint64_t *hwm_kib);

/* utime + stime of PID (all its threads) in ms, or -1. */
extern double proc_cpu_ms (int pid);

/* Order statistics of N doubles (sorted in place). */
extern double stat_quantile (double *v, size_t n, double q);

#endif /* BENCH_COMMON_H */
