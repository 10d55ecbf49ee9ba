/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The job engine: long-running work in a thread of its own, with
 * QEMU's job states, verbs and JOB_STATUS_CHANGE events (QEMU's job.c;
 * reference section 4.4).  A feature (push backup jobs) embeds
 * struct job first in its own struct and supplies a driver.
 *
 * States: created -> running <-> paused -> waiting -> pending ->
 * concluded -> null; a cancel or an error goes running/paused/... ->
 * aborting -> concluded -> null.  With auto_finalize false the job
 * stops in pending until job_finalize; with auto_dismiss false it stays
 * concluded until job_dismiss.  Every transition is checked against one
 * table, every verb against another, in job.c.
 *
 * Locking: the host lock (the monitor lock) is outermost; then
 * job_lock (job.c), which guards every job's state.  The verbs are
 * called with the host lock held.  The job's thread runs the driver's
 * run without either; the driver's prepare/commit/abort/clean run with
 * the host lock held (so they may change the model), from the job's
 * thread (auto-finalize) or from job_finalize.
 */
#ifndef CHECKPOINT_ENGINES_JOB_H
#define CHECKPOINT_ENGINES_JOB_H

#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>
#include <jansson.h>

#include "qmp.h"

enum job_status {
  JOB_STATUS_UNDEFINED, JOB_STATUS_CREATED, JOB_STATUS_RUNNING,
  JOB_STATUS_PAUSED, JOB_STATUS_READY, JOB_STATUS_STANDBY,
  JOB_STATUS_WAITING, JOB_STATUS_PENDING, JOB_STATUS_ABORTING,
  JOB_STATUS_CONCLUDED, JOB_STATUS_NULL,
  JOB_STATUS__MAX
};

enum job_verb {
  JOB_VERB_CANCEL, JOB_VERB_PAUSE, JOB_VERB_RESUME, JOB_VERB_SET_SPEED,
  JOB_VERB_COMPLETE, JOB_VERB_FINALIZE, JOB_VERB_DISMISS,
  JOB_VERB__MAX
};

extern const char *job_status_name (enum job_status s);
extern const char *job_verb_name (enum job_verb v);
/* Does QEMU's table allow FROM -> TO, resp. VERB in state S? */
extern bool job_transition_allowed (enum job_status from, enum job_status to);
extern bool job_verb_allowed (enum job_verb verb, enum job_status s);

struct job;

struct job_driver {
  const char *type;             /* QEMU's JobType: "backup" */
  /* In the job's thread, no lock held: the work.  Call job_pause_point
   * often; return 0, or an errno (ECANCELED once job_is_cancelled).
   */
  int (*run) (struct job *job);
  /* Host lock held.  Success: commit; failure or cancel: abort; then
   * clean either way.  Each may be NULL.
   */
  void (*commit) (struct job *job);
  void (*abort) (struct job *job);
  void (*clean) (struct job *job);
  /* The job has reached a final state (concluded, with its result):
   * for the block-job events (host lock held).  May be NULL.
   */
  void (*concluded) (struct job *job);
  /* The job has reached pending and waits for job-finalize
   * (auto-finalize false): for BLOCK_JOB_PENDING (host lock held).
   * May be NULL.
   */
  void (*pending) (struct job *job);
  /* job-resume has just been accepted (host lock held): for what a
   * resume resets (a block job's io-status).  May be NULL.
   */
  void (*resumed) (struct job *job);
  void (*free) (struct job *job);       /* after null */
};

/* What the engine borrows from its host: the monitor lock and the
 * event sender (DATA stolen).
 */
struct job_host {
  void (*lock) (void);
  void (*unlock) (void);
  void (*emit_event) (const char *name, json_t *data);
};
extern void jobs_set_host (const struct job_host *host);

struct job {
  const struct job_driver *driver;
  struct job *next;
  char *id;
  bool auto_finalize, auto_dismiss;
  /* Under job_lock. */
  enum job_status status;
  bool cancelled;
  bool user_paused;
  int ret;                      /* 0, or the errno it ended with */
  uint64_t progress_current, progress_total;
  pthread_t thread;
  bool thread_started;
};

/* Host lock held.  Set up JOB (zeroed by the caller, driver set),
 * checking ID as QEMU does ("Invalid job ID", "Job ID 'X' already in
 * use"): -1 with *ERR.  Then created.
 */
extern int job_create (struct job *job, const struct job_driver *driver,
                       const char *id, bool auto_finalize, bool auto_dismiss,
                       struct qmp_error *err);
/* Host lock held: start the thread (running).  -1 with *ERR. */
extern int job_start (struct job *job, struct qmp_error *err);

extern struct job *jobs_find (const char *id);
/* Jobs that exist (not yet null). */
extern unsigned jobs_count (void);
extern struct job *jobs_first (void);           /* oldest first */

/* The verbs (host lock held); -1 with QEMU's error text. */
extern int job_user_cancel (struct job *job, struct qmp_error *err);
extern int job_user_pause (struct job *job, struct qmp_error *err);
extern int job_user_resume (struct job *job, struct qmp_error *err);
extern int job_finalize (struct job *job, struct qmp_error *err);
extern int job_dismiss (struct job *job, struct qmp_error *err);
/* The verb check alone (for set-speed and the like). */
extern int job_apply_verb (struct job *job, enum job_verb verb,
                           struct qmp_error *err);

/* In the job's thread. */
extern bool job_is_cancelled (struct job *job);
/* Sleep here while the job is paused; returns at once otherwise. */
extern void job_pause_point (struct job *job);
extern void job_progress (struct job *job, uint64_t done, uint64_t total);
/* An I/O error whose policy is stop: the job pauses at its next pause
 * point, as if the user had paused it (QEMU makes it user-visible, so
 * job-resume resumes it).
 */
extern void job_pause_on_error (struct job *job);
/* Run has done its work but waits for others (a grouped transaction):
 * running -> waiting now (QEMU's state); run returns later.  No pause
 * point may follow.
 */
extern void job_enter_waiting (struct job *job);

/* query-jobs' entry (host lock held). */
extern json_t *job_describe (struct job *job);
/* At shutdown, no host lock held: cancel every job and wait for it to
 * reach null.
 */
extern void jobs_cancel_all (void);

#endif /* CHECKPOINT_ENGINES_JOB_H */
