/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Push backup jobs (see push-backup.h). */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>

#include "cleanup.h"
#include "rounding.h"
#include "vector.h"
#include "bitmap.h"
#include "core/bitmap-ops.h"
#include "core/limits.h"
#include "engines/cbw.h"
#include "engines/snapshot-access.h"
#include "features/push-backup.h"
#include "features/push-target.h"
#include "features/node-target.h"
#include "features/push-fleece.h"

/* The copy goes by requests of this size (block status is asked per
 * request too).  Small enough that a piece read, scanned for zeros and
 * sent is still in the CPU's cache, as it is in the target server's
 * between its receive and its write (bench-push: 4 MiB requests cost
 * an NBD target half again the CPU of 1 MiB ones), big enough for few
 * requests.
 */
#define COPY_CHUNK (1024 * 1024)
/* QEMU's job cluster: what is copied of a dirty bitmap. */
#define COPY_GRANULARITY (64 * 1024)
/* Zeros in data are found by pieces of this size. */
#define ZERO_PIECE (64 * 1024)

/* The jobs of one transaction with completion-mode grouped: they end
 * together.  A member that fails or is cancelled cancels the others;
 * one that has copied everything waits (in state waiting, as QEMU's)
 * until every member has, so that none is committed while another may
 * still fail.
 * The member list changes under the monitor lock; the counts under
 * the group's lock.
 */
struct push_group {
  pthread_mutex_t lock;
  unsigned refs;                /* members, and the transaction */
  unsigned copying;             /* members not done copying */
  bool failed;
  struct push_backup *members;
};

struct push_backup {
  struct job job;               /* first: the engine's view */
  struct push_group *group;     /* NULL: ends on its own */
  struct push_backup *group_next;
  char *label;                  /* "job ID", in messages */
  struct node *node;            /* NULL once the job let go of it */
  char *export;                 /* what the job's context opens */
  struct cbw *cbw;              /* NULL for sync none */
  struct push_fleece *fleece;   /* sync none's, else NULL */
  uint64_t fleece_bytes;        /* atomic: what sync none has saved */
  bool attached;                /* the cbw or fleece intercepts writes */
  struct push_target *target;  /* drive-backup's */
  struct node_target *tnode;    /* blockdev-backup's */
  bool target_new;              /* reads as zeros: need not write them */
  uint64_t speed;               /* atomic; bytes/s, 0: unlimited */
  unsigned speed_gen;           /* atomic; bumped by set-speed */
  bool done;                    /* atomic: the frozen view is unused */
  /* sync incremental/bitmap, or full with a bitmap: the bitmap (busy
   * while the job lives; from the start it records the writes made
   * during the job, QEMU's successor), its bits at the start, and
   * bitmap-mode.
   */
  struct dirty_bitmap *bitmap;
  struct bitmap *frozen;
  enum push_bitmap_mode mode;
  /* What to copy (COPY_GRANULARITY); NULL: everything.  Not changed
   * while the job runs.
   */
  struct bitmap *todo;
  /* What the job has copied: only ever set while it runs (guest
   * writes test it, see cbw_set_copied).
   */
  struct bitmap *copied;
  bool rolled_back;             /* the txn undid it: bitmaps restored */
  enum push_on_error on_source_error, on_target_error;
  bool error_reported;          /* atomic: BLOCK_JOB_ERROR report sent */
  int iostatus;                 /* atomic: enum io_status */
  int cbw_errno;                /* atomic: copy-before-write failed */
};

/* query-block-jobs' io-status: set when an error stops the job, reset
 * by job-resume.
 */
enum io_status { IO_STATUS_OK, IO_STATUS_FAILED, IO_STATUS_NOSPACE };

/* What an I/O error of the copy does (QEMU's BlockErrorAction). */
enum error_action { ACTION_REPORT, ACTION_IGNORE, ACTION_STOP };

static const char *scratch_dir;
static nbdkit_backend *backend;
static void (*set_open_export) (const char *name);
/* The changes made inside a txn run with every barrier raised. */
static bool barrier_held;
/* The group that drive-backup actions join now (a grouped
 * transaction), or NULL.
 */
static struct push_group *current_group;

static void
group_unref (struct push_group *g)
{
  bool last;

  pthread_mutex_lock (&g->lock);
  last = --g->refs == 0;
  pthread_mutex_unlock (&g->lock);
  if (last) {
    pthread_mutex_destroy (&g->lock);
    free (g);
  }
}

int
push_backups_group_begin (struct qmp_error *err)
{
  struct push_group *g = calloc (1, sizeof *g);

  if (g == NULL) {
    qmp_error (err, "out of memory");
    return -1;
  }
  pthread_mutex_init (&g->lock, NULL);
  g->refs = 1;
  current_group = g;
  return 0;
}

void
push_backups_group_end (void)
{
  if (current_group)
    group_unref (current_group);
  current_group = NULL;
}

/* Monitor lock held. */
static void
group_leave (struct push_backup *p)
{
  struct push_backup **pp;

  if (p->group == NULL)
    return;
  for (pp = &p->group->members; *pp; pp = &(*pp)->group_next)
    if (*pp == p) {
      *pp = p->group_next;
      break;
    }
  group_unref (p->group);
  p->group = NULL;
}

/* The job's thread, its copy over with R: the group's end.  Returns
 * the job's result.
 */
static int
group_done (struct push_backup *p, int r)
{
  struct push_group *g = p->group;
  struct push_backup *m;

  if (g == NULL)
    return r;
  pthread_mutex_lock (&g->lock);
  g->copying--;
  if (r != 0)
    g->failed = true;
  pthread_mutex_unlock (&g->lock);
  if (r != 0) {
    qmp_lock ();
    for (m = g->members; m; m = m->group_next)
      if (m != p) {
        struct qmp_error err = { 0 };
        job_user_cancel (&m->job, &err);        /* ended ones refuse */
        qmp_error_clear (&err);
      }
    qmp_unlock ();
    return r;
  }
  /* Done: it waits for the others in QEMU's state waiting. */
  job_enter_waiting (&p->job);
  for (;;) {
    bool over;
    pthread_mutex_lock (&g->lock);
    over = g->copying == 0 || g->failed;
    pthread_mutex_unlock (&g->lock);
    if (job_is_cancelled (&p->job))
      return ECANCELED;
    if (over)
      return 0;
    nanosleep (&(struct timespec) { .tv_nsec = 20000000 }, NULL);
  }
}

void
push_backups_set_scratch_dir (const char *dir)
{
  scratch_dir = dir;
}

void
push_backups_set_backend (nbdkit_backend *b, void (*set_export) (const char *))
{
  backend = b;
  set_open_export = set_export;
}

static const struct job_driver push_driver;

bool
job_is_push_backup (const struct job *job)
{
  return job->driver == &push_driver;
}

bool
push_backups_use_node (const struct node *n)
{
  struct job *j;

  for (j = jobs_first (); j; j = j->next) {
    struct push_backup *p = (struct push_backup *) j;
    if (job_is_push_backup (j) &&
        (p->node == n || (p->tnode && node_target_node (p->tnode) == n)))
      return true;
  }
  return false;
}

static bool
view_dead (void *opaque)
{
  struct push_backup *p = opaque;

  return __atomic_load_n (&p->done, __ATOMIC_SEQ_CST);
}

/* A guest write could not save the old data: the write goes on, the
 * job fails with the error (the guest never sees it).
 */
static void
view_failed (void *opaque, const char *what, int errnum)
{
  struct push_backup *p = opaque;
  int zero = 0;

  if (__atomic_compare_exchange_n (&p->cbw_errno, &zero, errnum ? errnum : EIO,
                                   false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
    nbdkit_error ("checkpoint: %s: %s: %s", p->label, what,
                  strerror (errnum));
}

static uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * UINT64_C (1000000000) + ts.tv_nsec;
}

static void
error_event (struct push_backup *p, bool write, const char *action)
{
  qmp_emit_event ("BLOCK_JOB_ERROR",
                  json_pack ("{s:s,s:s,s:s}", "device", p->job.id,
                             "operation", write ? "write" : "read",
                             "action", action));
}

/* QEMU's block_job_error_action: the policy of the failing side. */
static enum error_action
error_action (const struct push_backup *p, bool write, int errnum)
{
  switch (write ? p->on_target_error : p->on_source_error) {
  case PUSH_ON_ERROR_IGNORE:
    return ACTION_IGNORE;
  case PUSH_ON_ERROR_STOP:
    return ACTION_STOP;
  case PUSH_ON_ERROR_ENOSPC:
  case PUSH_ON_ERROR_AUTO:
    return errnum == ENOSPC ? ACTION_STOP : ACTION_REPORT;
  default:
    return ACTION_REPORT;
  }
}

/* An I/O error that ends the job: one BLOCK_JOB_ERROR "report". */
static void
io_error (struct push_backup *p, bool write, int errnum)
{
  /* The job ends at its first error: the chunks in flight with it
   * may fail too, but that is one error of the job.
   */
  if (__atomic_exchange_n (&p->error_reported, true, __ATOMIC_SEQ_CST))
    return;
  nbdkit_error ("checkpoint: %s: %s error: %s", p->label,
                write ? "target write" : "source read", strerror (errnum));
  error_event (p, write, "report");
}

static int
target_write (struct push_backup *p, const void *buf, size_t n,
              uint64_t offset)
{
  return p->tnode ? node_target_write (p->tnode, buf, n, offset)
    : push_target_write (p->target, buf, n, offset);
}

static bool
is_zero (const char *buf, size_t n)
{
  return n == 0 || (buf[0] == 0 && memcmp (buf, buf + 1, n - 1) == 0);
}

/* Data read from the frozen view: to a new target, only its pieces
 * that are not all zeros, so the target stays sparse there.
 */
static int
write_data (struct push_backup *p, const char *buf, size_t n, uint64_t offset)
{
  size_t pos = 0, run;

  if (!p->target_new)
    return target_write (p, buf, n, offset);
  while (pos < n) {
    size_t len = MIN (n - pos, ZERO_PIECE);
    if (is_zero (buf + pos, len)) {
      pos += len;
      continue;
    }
    for (run = pos + len; run < n; run += len) {
      len = MIN (n - run, ZERO_PIECE);
      if (is_zero (buf + run, len))
        break;
    }
    if (target_write (p, buf + pos, run - pos,
                           offset + pos) == -1)
      return -1;
    pos = run;
  }
  return 0;
}

/* Copy [OFFSET, OFFSET+N) of the frozen view, of extent type TYPE.
 * An errno, with *WRITE saying which side failed.
 */
static int
copy_extent (struct push_backup *p, nbdkit_next *next, char *buf,
             uint64_t offset, uint32_t n, uint32_t type, bool *write)
{
  int err = 0;

  *write = true;
  if (type & NBDKIT_EXTENT_ZERO) {
    if (p->target_new)
      return 0;
    return (p->tnode ? node_target_zero (p->tnode, offset, n)
            : push_target_zero (p->target, offset, n)) == -1 ? errno : 0;
  }
  if (snapshot_pread (p->cbw, next, buf, n, offset, &err) == -1) {
    *write = false;
    return err ? err : EIO;
  }
  return write_data (p, buf, n, offset) == -1 ? errno : 0;
}

static int
copy_chunk (struct push_backup *p, nbdkit_next *next, char *buf,
            uint64_t pos, uint64_t end, bool *write)
{
  struct nbdkit_extents *ext = nbdkit_extents_new (pos, end);
  int err = 0;
  size_t i;

  *write = false;
  if (ext == NULL)
    return errno ? errno : ENOMEM;
  if (snapshot_extents (p->cbw, next, end - pos, pos, 0, ext, &err) == -1) {
    nbdkit_extents_free (ext);
    return err ? err : EIO;
  }
  for (i = 0; err == 0 && i < nbdkit_extents_count (ext); i++) {
    struct nbdkit_extent e = nbdkit_get_extent (ext, i);
    uint64_t s = MAX (e.offset, pos), f = MIN (e.offset + e.length, end);
    if (s < f)
      err = copy_extent (p, next, buf, s, f - s, e.type, write);
  }
  /* Whatever block status left out is copied as data. */
  if (err == 0 && nbdkit_extents_count (ext) > 0) {
    struct nbdkit_extent e = nbdkit_get_extent (ext,
                                                nbdkit_extents_count (ext) - 1);
    if (e.offset + e.length < end)
      err = copy_extent (p, next, buf, e.offset + e.length,
                         end - (e.offset + e.length), 0, write);
  }
  else if (err == 0)
    err = copy_extent (p, next, buf, pos, end - pos, 0, write);
  nbdkit_extents_free (ext);
  return err;
}

/* Sleep until DONE bytes are due at SPEED since START, waking for
 * cancel, pause and speed changes.
 */
static void
rate_limit (struct push_backup *p, uint64_t *start, uint64_t *base,
            uint64_t done, unsigned *gen)
{
  for (;;) {
    uint64_t speed = __atomic_load_n (&p->speed, __ATOMIC_SEQ_CST);
    unsigned g = __atomic_load_n (&p->speed_gen, __ATOMIC_SEQ_CST);
    uint64_t due, now = now_ns ();
    struct timespec ts;

    if (g != *gen) {            /* a new speed counts from now */
      *gen = g;
      *start = now;
      *base = done;
    }
    if (speed == 0 || job_is_cancelled (&p->job))
      return;
    due = *start + (uint64_t) ((double) (done - *base) * 1e9 / speed);
    if (due <= now)
      return;
    due = MIN (due - now, UINT64_C (100000000));
    ts.tv_sec = due / 1000000000;
    ts.tv_nsec = due % 1000000000;
    nanosleep (&ts, NULL);
    job_pause_point (&p->job);
  }
}

/* The next run of [POS, SIZE) to copy: [*START, *END); false at the
 * end.
 */
static bool
next_run (struct push_backup *p, uint64_t pos, uint64_t size,
          uint64_t *start, uint64_t *end)
{
  if (p->todo == NULL) {
    *start = pos;
    *end = size;
    return pos < size;
  }
  if (pos >= size || !bitmap_find (p->todo, pos, true, start) ||
      *start >= size)
    return false;
  *end = MIN (bitmap_run_end (p->todo, *start, size), size);
  return true;
}

/* The copy runs in COPY_WORKERS threads, each with a chunk in flight;
 * the job's thread hands the chunks out in order, and checks pause,
 * cancel and the rate between them.
 */
#define COPY_WORKERS 4

/* A chunk to copy again after an error whose action was not report. */
struct chunk { uint64_t start, end; };
DEFINE_VECTOR_TYPE (chunks, struct chunk);

struct copy_pool {
  struct push_backup *p;
  nbdkit_next *next;
  pthread_mutex_t lock;
  pthread_cond_t changed;
  /* Under lock. */
  bool have_work, quit;
  uint64_t work_start, work_end;
  unsigned busy;                /* chunks taken, not yet done */
  int err;                      /* the first error that ends the job */
  /* Failed chunks to copy again, and the first failure of them: its
   * side, errno and action (QEMU acts on a copy call's first error).
   */
  chunks retry;
  bool retry_write;
  int retry_errno;
  enum error_action retry_action;
  uint64_t done, total;
};

/* Lock held: chunk [START, END) failed with ERR on side WRITE.  True
 * when that ends the job (then BLOCK_JOB_ERROR "report" is due).
 */
static bool
chunk_failed (struct copy_pool *pool, uint64_t start, uint64_t end, int err,
              bool write)
{
  enum error_action a = error_action (pool->p, write, err);

  if (a != ACTION_REPORT && pool->err == 0 &&
      chunks_append (&pool->retry,
                     (struct chunk) { .start = start, .end = end }) == 0) {
    if (pool->retry.len == 1) {
      pool->retry_write = write;
      pool->retry_errno = err;
      pool->retry_action = a;
    }
    return false;
  }
  if (pool->err == 0)
    pool->err = err;
  return true;
}

static void *
copy_worker (void *opaque)
{
  struct copy_pool *pool = opaque;
  char *buf = malloc (COPY_CHUNK);

  pthread_mutex_lock (&pool->lock);
  for (;;) {
    uint64_t start, end;
    bool write = false, fatal = false;
    int err;

    while (!pool->have_work && !pool->quit)
      pthread_cond_wait (&pool->changed, &pool->lock);
    if (!pool->have_work)
      break;
    start = pool->work_start;
    end = pool->work_end;
    pool->have_work = false;
    pool->busy++;
    pthread_cond_broadcast (&pool->changed);
    pthread_mutex_unlock (&pool->lock);
    err = buf ? copy_chunk (pool->p, pool->next, buf, start, end, &write)
              : ENOMEM;
    pthread_mutex_lock (&pool->lock);
    pool->busy--;
    /* Copied: guest writes there stop saving old data; what
     * bitmap-mode=always keeps on failure is the rest.
     */
    if (err == 0 &&
        bitmap_set_range (pool->p->copied, start, end - start) == -1) {
      err = ENOMEM;
      if (pool->err == 0)
        pool->err = err;
    }
    else if (err && buf == NULL) {
      if (pool->err == 0)
        pool->err = err;
    }
    else if (err)
      fatal = chunk_failed (pool, start, end, err, write);
    if (err == 0) {
      pool->done += end - start;
      job_progress (&pool->p->job, MIN (pool->done, pool->total),
                    pool->total);
    }
    pthread_cond_broadcast (&pool->changed);
    if (fatal) {
      pthread_mutex_unlock (&pool->lock);
      io_error (pool->p, write, err);
      pthread_mutex_lock (&pool->lock);
    }
  }
  pthread_mutex_unlock (&pool->lock);
  free (buf);
  return NULL;
}

/* Lock held: until no chunk is in flight or waiting. */
static void
wait_idle (struct copy_pool *pool)
{
  while (pool->have_work || pool->busy > 0)
    pthread_cond_wait (&pool->changed, &pool->lock);
}

/* The job's thread: give [START, END) to a worker.  0 or the error
 * that ends the job.
 */
static int
hand_out (struct copy_pool *pool, unsigned nr_workers, uint64_t start,
          uint64_t end)
{
  int err;

  pthread_mutex_lock (&pool->lock);
  while ((pool->have_work || pool->busy >= nr_workers) && pool->err == 0)
    pthread_cond_wait (&pool->changed, &pool->lock);
  err = pool->err;
  if (err == 0) {
    pool->work_start = start;
    pool->work_end = end;
    pool->have_work = true;
    pthread_cond_broadcast (&pool->changed);
  }
  pthread_mutex_unlock (&pool->lock);
  return err;
}

static bool
have_retries (struct copy_pool *pool)
{
  bool r;

  pthread_mutex_lock (&pool->lock);
  r = pool->retry.len > 0;
  pthread_mutex_unlock (&pool->lock);
  return r;
}

/* The job's thread: copy again the chunks that failed with a policy
 * other than report, after one BLOCK_JOB_ERROR a round (QEMU's: one
 * per copy call).  stop pauses the job first (io-status failed, or
 * nospace for ENOSPC) until job-resume; ignore goes on at once, as
 * QEMU 7.2 retries what is left, so a lasting error repeats the round
 * (paced by RETRY_PAUSE_NS).  0, or the error that ends the job.
 */
#define RETRY_PAUSE_NS 10000000
static int
retry_failed (struct copy_pool *pool, unsigned nr_workers)
{
  struct push_backup *p = pool->p;

  for (;;) {
    chunks list;
    enum error_action a;
    bool write;
    int errnum, err = 0;
    size_t i;

    pthread_mutex_lock (&pool->lock);
    wait_idle (pool);
    if (pool->err || pool->retry.len == 0) {
      err = pool->err;
      pthread_mutex_unlock (&pool->lock);
      return err;
    }
    list = pool->retry;
    pool->retry = (chunks) empty_vector;
    a = pool->retry_action;
    write = pool->retry_write;
    errnum = pool->retry_errno;
    pthread_mutex_unlock (&pool->lock);
    error_event (p, write, a == ACTION_STOP ? "stop" : "ignore");
    if (a == ACTION_STOP) {
      __atomic_store_n (&p->iostatus, errnum == ENOSPC ? IO_STATUS_NOSPACE
                        : IO_STATUS_FAILED, __ATOMIC_SEQ_CST);
      job_pause_on_error (&p->job);
    }
    else
      nanosleep (&(struct timespec) { .tv_nsec = RETRY_PAUSE_NS }, NULL);
    job_pause_point (&p->job);
    for (i = 0; err == 0 && i < list.len; i++)
      err = job_is_cancelled (&p->job) ? ECANCELED
        : hand_out (pool, nr_workers, list.ptr[i].start, list.ptr[i].end);
    chunks_reset (&list);
    if (err)
      return err;
  }
}

/* The job's thread: hand out the chunks.  0 or an errno. */
static int
dispatch (struct copy_pool *pool, unsigned nr_workers)
{
  struct push_backup *p = pool->p;
  uint64_t size = cbw_size (p->cbw), pos = 0, start = now_ns (), base = 0;
  uint64_t dispatched = 0, run, run_end;
  unsigned gen = __atomic_load_n (&p->speed_gen, __ATOMIC_SEQ_CST);
  int err = 0;

  while (err == 0 && next_run (p, pos, size, &run, &run_end)) {
    uint64_t end = MIN (run_end, run + COPY_CHUNK);

    /* A pause waits for the chunks in flight: progress stands still. */
    if (__atomic_load_n (&p->job.user_paused, __ATOMIC_SEQ_CST)) {
      pthread_mutex_lock (&pool->lock);
      wait_idle (pool);
      pthread_mutex_unlock (&pool->lock);
      job_pause_point (&p->job);
    }
    if (have_retries (pool) && (err = retry_failed (pool, nr_workers)) != 0)
      return err;
    if (job_is_cancelled (&p->job))
      return ECANCELED;
    if ((err = __atomic_load_n (&p->cbw_errno, __ATOMIC_SEQ_CST)) != 0)
      return err;
    err = hand_out (pool, nr_workers, run, end);
    pos = end;
    dispatched += end - run;
    /* The first chunk goes unlimited, as QEMU's. */
    if (err == 0)
      rate_limit (p, &start, &base, dispatched, &gen);
  }
  /* The last chunks may have failed too. */
  if (err == 0)
    err = retry_failed (pool, nr_workers);
  if (err == 0 && job_is_cancelled (&p->job))
    err = ECANCELED;
  return err;
}

static int
copy_all (struct push_backup *p, nbdkit_next *next)
{
  uint64_t size = cbw_size (p->cbw);
  struct copy_pool pool = {
    .p = p, .next = next,
    .total = p->todo ? MIN (bitmap_count_bytes (p->todo), size) : size,
  };
  pthread_t workers[COPY_WORKERS];
  unsigned i, nr = 0;
  int err;

  pthread_mutex_init (&pool.lock, NULL);
  pthread_cond_init (&pool.changed, NULL);
  job_progress (&p->job, 0, pool.total);
  for (i = 0; i < COPY_WORKERS; i++)
    if (pthread_create (&workers[nr], NULL, copy_worker, &pool) == 0)
      nr++;
  err = nr > 0 ? dispatch (&pool, nr) : EAGAIN;
  pthread_mutex_lock (&pool.lock);
  wait_idle (&pool);
  pool.quit = true;
  pthread_cond_broadcast (&pool.changed);
  if (err == 0)
    err = pool.err;
  pthread_mutex_unlock (&pool.lock);
  for (i = 0; i < nr; i++)
    pthread_join (workers[i], NULL);
  pthread_cond_destroy (&pool.changed);
  pthread_mutex_destroy (&pool.lock);
  chunks_reset (&pool.retry);
  if (err)
    return err;
  if ((p->tnode ? node_target_flush (p->tnode)
       : push_target_flush (p->target)) == -1) {
    err = errno;
    io_error (p, true, err);
    return err;
  }
  /* A failure of a write that raced with the last chunk counts too. */
  return __atomic_load_n (&p->cbw_errno, __ATOMIC_SEQ_CST);
}

/* sync none: the fleece saves old data into the target (under its
 * lock) as guest writes come; progress is what it has saved.
 */
static int
fleece_write (void *opaque, const void *buf, size_t n, uint64_t offset)
{
  struct push_backup *p = opaque;
  uint64_t done;

  if (write_data (p, buf, n, offset) == -1)
    return -1;
  done = __atomic_add_fetch (&p->fleece_bytes, n, __ATOMIC_SEQ_CST);
  job_progress (&p->job, done, p->job.progress_total);
  return 0;
}

/* sync none's run: nothing to copy; it lasts until cancelled (or a
 * save fails).
 */
static int
run_fleece (struct push_backup *p)
{
  int r;

  for (;;) {
    job_pause_point (&p->job);
    if (job_is_cancelled (&p->job)) {
      r = ECANCELED;
      break;
    }
    if ((r = push_fleece_error (p->fleece)) != 0)
      break;
    nanosleep (&(struct timespec) { .tv_nsec = 20000000 }, NULL);
  }
  push_fleece_stop (p->fleece);
  __atomic_store_n (&p->done, true, __ATOMIC_SEQ_CST);
  if ((p->tnode ? node_target_flush (p->tnode)
       : push_target_flush (p->target)) == -1)
    nbdkit_error ("checkpoint: %s: flushing the target: %m", p->label);
  return r;
}

static int
push_run (struct job *job)
{
  struct push_backup *p = (struct push_backup *) job;
  nbdkit_next *next;
  int r = EIO;

  if (p->fleece)
    return group_done (p, run_fleece (p));

  if (set_open_export)
    set_open_export (p->export);
  next = nbdkit_next_context_open (backend, 1, p->export, 1);
  if (next == NULL) {
    if (set_open_export)
      set_open_export (NULL);
    nbdkit_error ("checkpoint: %s: cannot open disk '%s'", p->label,
                  p->node->name);
    io_error (p, false, EIO);
  }
  else {
    /* get_size also lets nbdkit check the ranges of the reads. */
    if (next->prepare (next) == 0 &&
        next->get_size (next) >= (int64_t) cbw_size (p->cbw))
      r = copy_all (p, next);
    else
      io_error (p, false, EIO);
    next->finalize (next);
    nbdkit_next_context_close (next);
  }
  /* The frozen view is no longer read: writes stop paying for it. */
  __atomic_store_n (&p->done, true, __ATOMIC_SEQ_CST);
  return group_done (p, r);
}

/* Monitor lock held: the freeze ends, the scratch and the target go. */
static void
let_go (struct push_backup *p)
{
  __atomic_store_n (&p->done, true, __ATOMIC_SEQ_CST);
  if (p->fleece)
    push_fleece_stop (p->fleece);
  if (p->attached) {
    if (!barrier_held)
      nodes_barrier_raise ();
    if (p->fleece)
      push_fleece_detach (p->fleece);
    else
      cbw_detach (p->cbw);
    if (!barrier_held)
      nodes_barrier_lower ();
    p->attached = false;
  }
  if (p->cbw)
    cbw_discard (p->cbw);
  push_target_close (p->target, false);
  p->target = NULL;
  node_target_close (p->tnode);
  p->tnode = NULL;
  if (p->bitmap) {
    p->bitmap->users--;
    p->bitmap = NULL;
  }
  p->node = NULL;
}

/* Monitor lock held, barrier not: BITS |= SRC in a change of its own
 * (so that persistence sees it).
 */
static void
bitmap_add_bits (struct push_backup *p, const struct bitmap *src)
{
  struct qmp_error err = { 0 };
  struct txn t = TXN_INIT;

  /* Held already when a job that could not start ends in its txn. */
  if (!barrier_held)
    nodes_barrier_raise ();
  if (bitmaps_merge (&t, p->node, p->bitmap, src, &err) == -1)
    txn_abort (&t);
  else
    txn_commit (&t, &err);
  if (!barrier_held)
    nodes_barrier_lower ();
  if (err.class) {
    nbdkit_error ("checkpoint: %s: bitmap '%s' could not take back its "
                  "bits: %s", p->label, p->bitmap->name,
                  err.desc ? err.desc : "out of memory");
    qmp_error_clear (&err);
  }
}

/* QEMU's bitmap-mode table (reference 4.3).  The bitmap has recorded
 * the writes made during the job; on success with on-success or
 * always that is all it keeps.
 */
static void
push_commit (struct job *job)
{
  struct push_backup *p = (struct push_backup *) job;

  if (p->bitmap && !p->rolled_back && p->mode == PUSH_BITMAP_NEVER)
    bitmap_add_bits (p, p->frozen);
}

/* TODO minus what the job copied (the job's thread has ended).  Out
 * of memory, the bitmap keeps the job's every chunk: too much, never
 * too little.
 */
static void
without_copied (struct push_backup *p)
{
  uint64_t pos = 0, start, size = bitmap_size (p->copied);

  while (bitmap_find (p->copied, pos, true, &start) && start < size) {
    pos = bitmap_run_end (p->copied, start, size);
    if (bitmap_clear_range (p->todo, start, pos - start) == -1) {
      nbdkit_error ("checkpoint: %s: bitmap '%s': out of memory: it keeps "
                    "every chunk of the job", p->label, p->bitmap->name);
      return;
    }
  }
}

static void
push_abort (struct job *job)
{
  struct push_backup *p = (struct push_backup *) job;

  if (p->bitmap == NULL || p->rolled_back)
    return;
  if (p->mode == PUSH_BITMAP_ALWAYS) {
    if (p->todo) {
      without_copied (p);
      bitmap_add_bits (p, p->todo);
    }
  }
  else
    bitmap_add_bits (p, p->frozen);
}

/* The job's end, before it is concluded: QEMU's block-job events. */
static void
push_clean (struct job *job)
{
  struct push_backup *p = (struct push_backup *) job;
  json_t *data;

  let_go (p);
  group_leave (p);
  data = json_pack ("{s:s,s:s,s:I,s:I,s:I}", "type", "backup",
                    "device", job->id,
                    "len", (json_int_t) job->progress_total,
                    "offset", (json_int_t) job->progress_current,
                    "speed", (json_int_t) __atomic_load_n (&p->speed,
                                                           __ATOMIC_SEQ_CST));
  if (job->cancelled && (job->ret == 0 || job->ret == ECANCELED))
    qmp_emit_event ("BLOCK_JOB_CANCELLED", data);
  else {
    if (job->ret != 0)
      json_object_set_new (data, "error", json_string (strerror (job->ret)));
    qmp_emit_event ("BLOCK_JOB_COMPLETED", data);
  }
}

/* DISCARD_TARGET: the job never existed, so neither should what it
 * created.
 */
static void
push_release (struct push_backup *p, bool discard_target)
{
  cbw_free (p->cbw);
  push_fleece_free (p->fleece);
  push_target_close (p->target, discard_target);
  node_target_close (p->tnode);
  bitmap_free (p->frozen);
  bitmap_free (p->todo);
  bitmap_free (p->copied);
  free (p->label);
  free (p->export);
  free (p);
}

static void
push_free (struct job *job)
{
  push_release ((struct push_backup *) job, false);
}

/* auto-finalize false: the job waits in pending for job-finalize,
 * which applies the bitmap's result (QEMU's BLOCK_JOB_PENDING).
 */
static void
push_pending (struct job *job)
{
  qmp_emit_event ("BLOCK_JOB_PENDING",
                  json_pack ("{s:s,s:s}", "type", "backup", "id", job->id));
}

/* QEMU's block_job_user_resume resets the io-status. */
static void
push_resumed (struct job *job)
{
  struct push_backup *p = (struct push_backup *) job;

  __atomic_store_n (&p->iostatus, IO_STATUS_OK, __ATOMIC_SEQ_CST);
}

static const struct job_driver push_driver = {
  .type = "backup",
  .run = push_run,
  .commit = push_commit,
  .abort = push_abort,
  .clean = push_clean,
  .pending = push_pending,
  .resumed = push_resumed,
  .free = push_free,
};

/* Before the job exists (push_free is for jobs). */
static void
push_discard (struct push_backup *p)
{
  push_release (p, true);
}

static const char *
sync_name (enum push_sync s)
{
  static const char *const names[] = {
    "full", "incremental", "bitmap", "none", "top",
  };
  return names[s];
}

/* QEMU's checks of sync, bitmap and bitmap-mode, in QEMU's order. */
static int
check_sync (const struct push_backup_spec *spec, struct node *n,
            enum push_bitmap_mode *mode, struct qmp_error *err)
{
  *mode = spec->bitmap_mode;
  if (spec->bitmap) {
    struct node *np;
    if (bitmaps_find (n, spec->bitmap) == NULL) {
      qmp_error (err, "Bitmap '%s' could not be found", spec->bitmap);
      return -1;
    }
    if (spec->sync == PUSH_SYNC_INCREMENTAL) {
      if (*mode != PUSH_BITMAP_NONE_GIVEN && *mode != PUSH_BITMAP_ON_SUCCESS) {
        qmp_error (err, "Bitmap sync mode must be 'on-success' when using "
                   "sync mode 'incremental'");
        return -1;
      }
      *mode = PUSH_BITMAP_ON_SUCCESS;
    }
    if (*mode == PUSH_BITMAP_NONE_GIVEN) {
      qmp_error (err, "Bitmap sync mode must be given when providing a "
                 "bitmap");
      return -1;
    }
    if (bitmaps_lookup (n->name, spec->bitmap, true, &np, err) == NULL)
      return -1;
    if (spec->sync == PUSH_SYNC_NONE) {
      qmp_error (err, "sync mode 'none' does not produce meaningful bitmap "
                 "outputs");
      return -1;
    }
    if (*mode == PUSH_BITMAP_NEVER && spec->sync != PUSH_SYNC_BITMAP) {
      qmp_error (err, "Bitmap sync mode 'never' has no meaningful effect "
                 "when combined with sync mode '%s'", sync_name (spec->sync));
      return -1;
    }
  }
  else if (*mode != PUSH_BITMAP_NONE_GIVEN) {
    qmp_error (err, "Cannot specify bitmap sync mode without a bitmap");
    return -1;
  }
  if ((spec->sync == PUSH_SYNC_INCREMENTAL || spec->sync == PUSH_SYNC_BITMAP)
      && spec->bitmap == NULL) {
    qmp_error (err, "must provide a valid bitmap name for '%s' sync mode",
               sync_name (spec->sync));
    return -1;
  }
  switch (spec->sync) {
  case PUSH_SYNC_FULL:
  case PUSH_SYNC_INCREMENTAL:
  case PUSH_SYNC_BITMAP:
  case PUSH_SYNC_NONE:
    return 0;
  case PUSH_SYNC_TOP:
    qmp_error (err, "sync mode 'top' is not supported: the disks have no "
               "backing chain (use 'full')");
    return -1;
  }
  abort ();
}

/* blockdev-backup's target: another node of the same size, in no
 * other job (QEMU's texts).
 */
static int
open_target_node (struct push_backup *p, const struct push_backup_spec *spec,
                  struct node *src, struct qmp_error *err)
{
  struct node *n = nodes_lookup (spec->target_node, err);

  if (n == NULL)
    return -1;
  if (n == src) {
    qmp_error (err, "Source and target cannot be the same");
    return -1;
  }
  if (push_backups_use_node (n)) {
    qmp_error (err, "Node '%s' is busy: block device is in use by block "
               "job: backup", n->name);
    return -1;
  }
  if (n->size != src->size) {
    qmp_error (err, "Source and target image have different sizes");
    return -1;
  }
  p->tnode = node_target_open (n, backend, set_open_export, err);
  return p->tnode ? 0 : -1;
}

/* The target: raw only. */
static int
open_target (struct push_backup *p, const struct push_backup_spec *spec,
             struct node *src, struct qmp_error *err)
{
  uint64_t size = src->size;

  if (spec->target_node)
    return open_target_node (p, spec, src, err);
  if (spec->format && strcmp (spec->format, "raw") != 0) {
    qmp_error (err, "Format '%s' is not supported: drive-backup writes raw "
               "images only; to write %s, push to qemu-nbd (an nbd:// "
               "target) instead", spec->format, spec->format);
    return -1;
  }
  p->target = push_target_open (spec->target, spec->existing, size, err);
  if (p->target == NULL)
    return -1;
  p->target_new = push_target_reads_zeros (p->target);
  return 0;
}

/* The bitmap of SPEC, and what to copy: NEEDED (for the cbw, NULL:
 * everything) and P's todo.  -1 with *ERR.
 */
static int
setup_bitmap (struct push_backup *p, const struct push_backup_spec *spec,
              struct node *n, enum push_bitmap_mode mode,
              struct bitmap **needed, struct qmp_error *err)
{
  *needed = NULL;
  if (spec->bitmap == NULL)
    return 0;
  p->bitmap = bitmaps_find (n, spec->bitmap);
  p->mode = mode;
  p->frozen = bitmap_copy (p->bitmap->bm);
  p->todo = bitmap_new (n->size, COPY_GRANULARITY);
  if (p->frozen == NULL || p->todo == NULL ||
      (spec->sync == PUSH_SYNC_FULL
       ? bitmap_set_range (p->todo, 0, n->size) == -1
       : bitmap_merge (p->todo, p->frozen) == -1)) {
    p->bitmap = NULL;
    qmp_error (err, "out of memory");
    return -1;
  }
  /* A full copy saves every block; the others only what they copy. */
  if (spec->sync != PUSH_SYNC_FULL &&
      (*needed = bitmap_copy (p->todo)) == NULL) {
    p->bitmap = NULL;
    qmp_error (err, "out of memory");
    return -1;
  }
  return 0;
}

/* The transaction's end: the job starts, or it never was. */
static void
create_commit (void *opaque)
{
  struct push_backup *p = opaque;
  struct qmp_error err = { 0 };

  barrier_held = true;
  if (job_start (&p->job, &err) == -1) {
    nbdkit_error ("checkpoint: %s", err.desc ? err.desc : "out of memory");
    qmp_error_clear (&err);
  }
  barrier_held = false;
}

static void
create_undo (void *opaque)
{
  struct push_backup *p = opaque;
  struct qmp_error err = { 0 };
  bool dismiss = !p->job.auto_dismiss;

  p->rolled_back = true;
  barrier_held = true;
  job_user_cancel (&p->job, &err);      /* created: ends at once */
  qmp_error_clear (&err);
  if (dismiss)
    job_dismiss (&p->job, &err);
  qmp_error_clear (&err);
  barrier_held = false;
}

static const struct txn_step_ops create_ops = {
  .undo = create_undo, .commit = create_commit,
};

int
push_backup_create (struct txn *t, const struct push_backup_spec *spec,
                    struct qmp_error *err)
{
  struct node *n = nodes_lookup (spec->device, err);
  enum push_bitmap_mode mode;
  struct push_backup *p;
  struct cbw_owner owner;
  struct bitmap *needed = NULL;

  if (n == NULL ||
      (spec->target_node && nodes_lookup (spec->target_node, err) == NULL) ||
      check_sync (spec, n, &mode, err) == -1)
    return -1;
  if (backend == NULL) {
    qmp_error (err, "Push backups are not available before the disks are");
    return -1;
  }
  if (jobs_count () >= limits.jobs) {
    qmp_error (err, "Cannot start a job: %u jobs exist, the limit "
               "(max-jobs=%u); let one end (or dismiss it) first",
               jobs_count (), limits.jobs);
    return -1;
  }
  /* Its scratch, and the target's descriptor. */
  if (block_copy_fd_budget (1, 1, "start a backup job", err) == -1)
    return -1;
  if ((p = calloc (1, sizeof *p)) == NULL) {
    qmp_error (err, "out of memory");
    return -1;
  }
  p->speed = spec->speed;
  p->on_source_error = spec->on_source_error;
  p->on_target_error = spec->on_target_error;
  if (asprintf (&p->label, "job %s", spec->job_id ? spec->job_id : "") == -1) {
    p->label = NULL;
    qmp_error (err, "out of memory");
    push_discard (p);
    return -1;
  }
  if ((p->export = strdup (set_open_export ? n->name : "")) == NULL) {
    qmp_error (err, "out of memory");
    push_discard (p);
    return -1;
  }
  if (open_target (p, spec, n, err) == -1) {
    push_discard (p);
    return -1;
  }
  if (setup_bitmap (p, spec, n, mode, &needed, err) == -1) {
    push_discard (p);
    return -1;
  }
  owner = (struct cbw_owner) {
    .name = p->label, .dead = view_dead, .failed = view_failed, .opaque = p,
  };
  p->copied = bitmap_new (n->size, COPY_GRANULARITY);
  if (p->copied == NULL) {
    bitmap_free (needed);
    qmp_error (err, "out of memory");
    push_discard (p);
    return -1;
  }
  if (spec->sync == PUSH_SYNC_NONE) {
    /* Straight into the target, from inside the source's guest
     * writes: a target node is written directly (node-target.h).
     */
    if (p->tnode)
      node_target_set_direct (p->tnode);
    p->fleece = push_fleece_new (n, fleece_write, p, err);
  }
  else {
    p->cbw = cbw_new (n, needed, CBW_BREAK_SNAPSHOT, &owner, scratch_dir,
                      err);
    if (p->cbw)
      cbw_set_copied (p->cbw, p->copied);
  }
  if ((p->cbw == NULL && p->fleece == NULL) ||
      job_create (&p->job, &push_driver, spec->job_id ? spec->job_id : "",
                  spec->auto_finalize, spec->auto_dismiss, err) == -1) {
    push_discard (p);
    return -1;
  }
  /* From here the job exists: it ends through the engine.  What it
   * will copy is known now (query-jobs right after the command).
   */
  p->node = n;
  job_progress (&p->job, 0, p->todo ? MIN (bitmap_count_bytes (p->todo),
                                           n->size) : n->size);
  if (current_group) {
    p->group = current_group;
    pthread_mutex_lock (&p->group->lock);
    p->group->refs++;
    p->group->copying++;
    pthread_mutex_unlock (&p->group->lock);
    p->group_next = p->group->members;
    p->group->members = p;
  }
  /* The bitmap's bits move to FROZEN; from now on it records the
   * writes made during the job.  Undone with T.
   */
  if (p->bitmap && bitmaps_clear (t, n, p->bitmap, err) == -1) {
    create_undo (p);
    return -1;
  }
  if (p->bitmap)
    p->bitmap->users++;
  if (p->fleece ? push_fleece_attach (p->fleece, err) == -1
      : cbw_attach (p->cbw, err) == -1) {
    create_undo (p);
    return -1;
  }
  p->attached = true;
  if (txn_add (t, &create_ops, p) == -1) {
    qmp_error (err, "out of memory");
    return -1;
  }
  return 0;
}

int
push_backup_set_speed (struct job *job, int64_t speed, struct qmp_error *err)
{
  struct push_backup *p = (struct push_backup *) job;

  if (speed < 0) {
    qmp_error (err, "Invalid parameter 'speed'");
    return -1;
  }
  if (job_apply_verb (job, JOB_VERB_SET_SPEED, err) == -1)
    return -1;
  __atomic_store_n (&p->speed, (uint64_t) speed, __ATOMIC_SEQ_CST);
  __atomic_add_fetch (&p->speed_gen, 1, __ATOMIC_SEQ_CST);
  return 0;
}

static const char *
io_status_name (struct push_backup *p)
{
  switch (__atomic_load_n (&p->iostatus, __ATOMIC_SEQ_CST)) {
  case IO_STATUS_FAILED: return "failed";
  case IO_STATUS_NOSPACE: return "nospace";
  default: return "ok";
  }
}

json_t *
push_backup_describe (struct job *job)
{
  struct push_backup *p = (struct push_backup *) job;
  json_t *info = job_describe (job);
  const char *status = json_string_value (json_object_get (info, "status"));
  json_t *bj;

  if (info == NULL)
    return NULL;
  bj = json_pack ("{s:s,s:s,s:O,s:O,s:b,s:b,s:I,s:s,s:b,s:s,s:b,s:b}",
                  "type", "backup", "device", job->id,
                  "len", json_object_get (info, "total-progress"),
                  "offset", json_object_get (info, "current-progress"),
                  "busy", strcmp (status, "running") == 0,
                  "paused", job->user_paused,
                  "speed", (json_int_t) __atomic_load_n (&p->speed,
                                                         __ATOMIC_SEQ_CST),
                  "io-status", io_status_name (p),
                  "ready", false,
                  "status", status,
                  "auto-finalize", job->auto_finalize,
                  "auto-dismiss", job->auto_dismiss);
  if (bj && json_object_get (info, "error"))
    json_object_set (bj, "error", json_object_get (info, "error"));
  json_decref (info);
  return bj;
}
