/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The job engine (see job.h). */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "engines/job.h"

/* Guards every job's state and the list; signalled on every change of
 * state or of a pause request, so that waiters re-check.
 */
static pthread_mutex_t job_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t job_changed = PTHREAD_COND_INITIALIZER;
static struct job *jobs;
static unsigned running_threads;        /* job threads not yet returned */
static struct job_host host;

static const char *const status_names[JOB_STATUS__MAX] = {
  "undefined", "created", "running", "paused", "ready", "standby",
  "waiting", "pending", "aborting", "concluded", "null",
};

static const char *const verb_names[JOB_VERB__MAX] = {
  "cancel", "pause", "resume", "set-speed", "complete", "finalize",
  "dismiss",
};

/* Which state may follow which (QEMU's job state transition table).
 * Indexed [from][to]: U C R P Y S W D X E N.
 */
static const bool transitions[JOB_STATUS__MAX][JOB_STATUS__MAX] = {
  [JOB_STATUS_UNDEFINED] = { 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
  [JOB_STATUS_CREATED]   = { 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1 },
  [JOB_STATUS_RUNNING]   = { 0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0 },
  [JOB_STATUS_PAUSED]    = { 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0 },
  [JOB_STATUS_READY]     = { 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0 },
  [JOB_STATUS_STANDBY]   = { 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 },
  [JOB_STATUS_WAITING]   = { 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0 },
  [JOB_STATUS_PENDING]   = { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0 },
  [JOB_STATUS_ABORTING]  = { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0 },
  [JOB_STATUS_CONCLUDED] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 },
  [JOB_STATUS_NULL]      = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
};

/* Which verb each state accepts (reference section 4.4).
 * Indexed [verb][state]: U C R P Y S W D X E N.
 */
static const bool verbs[JOB_VERB__MAX][JOB_STATUS__MAX] = {
  [JOB_VERB_CANCEL]    = { 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0 },
  [JOB_VERB_PAUSE]     = { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 },
  [JOB_VERB_RESUME]    = { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 },
  [JOB_VERB_SET_SPEED] = { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 },
  [JOB_VERB_COMPLETE]  = { 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 },
  [JOB_VERB_FINALIZE]  = { 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0 },
  [JOB_VERB_DISMISS]   = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0 },
};

const char *
job_status_name (enum job_status s)
{
  return s < JOB_STATUS__MAX ? status_names[s] : "?";
}

const char *
job_verb_name (enum job_verb v)
{
  return v < JOB_VERB__MAX ? verb_names[v] : "?";
}

bool
job_transition_allowed (enum job_status from, enum job_status to)
{
  return from < JOB_STATUS__MAX && to < JOB_STATUS__MAX &&
    transitions[from][to];
}

bool
job_verb_allowed (enum job_verb verb, enum job_status s)
{
  return verb < JOB_VERB__MAX && s < JOB_STATUS__MAX && verbs[verb][s];
}

void
jobs_set_host (const struct job_host *h)
{
  host = *h;
}

/* job_lock held.  The one place a job changes state: checked against
 * the table (a refused transition is a bug here, so it aborts) and
 * announced.
 */
static void
set_status (struct job *job, enum job_status s)
{
  if (!job_transition_allowed (job->status, s))
    abort ();
  job->status = s;
  pthread_cond_broadcast (&job_changed);
  if (host.emit_event)
    host.emit_event ("JOB_STATUS_CHANGE",
                     json_pack ("{s:s,s:s}", "id", job->id,
                                "status", status_names[s]));
}

static bool
valid_id (const char *id)
{
  size_t i;

  if (!((id[0] >= 'a' && id[0] <= 'z') || (id[0] >= 'A' && id[0] <= 'Z')))
    return false;
  for (i = 1; id[i]; i++)
    if (!strchr ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                 "0123456789-._", id[i]))
      return false;
  return true;
}

struct job *
jobs_find (const char *id)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
  struct job *j;

  for (j = jobs; j; j = j->next)
    if (strcmp (j->id, id) == 0)
      return j;
  return NULL;
}

unsigned
jobs_count (void)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
  struct job *j;
  unsigned n = 0;

  for (j = jobs; j; j = j->next)
    n++;
  return n;
}

struct job *
jobs_first (void)
{
  return jobs;
}

int
job_create (struct job *job, const struct job_driver *driver, const char *id,
            bool auto_finalize, bool auto_dismiss, struct qmp_error *err)
{
  struct job **pp;

  if (!valid_id (id)) {
    qmp_error (err, "Invalid job ID '%s'", id);
    return -1;
  }
  if (jobs_find (id)) {
    qmp_error (err, "Job ID '%s' already in use", id);
    return -1;
  }
  if ((job->id = strdup (id)) == NULL) {
    qmp_error (err, "out of memory");
    return -1;
  }
  job->driver = driver;
  job->auto_finalize = auto_finalize;
  job->auto_dismiss = auto_dismiss;
  job->status = JOB_STATUS_UNDEFINED;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
  for (pp = &jobs; *pp; pp = &(*pp)->next)
    ;
  *pp = job;
  set_status (job, JOB_STATUS_CREATED);
  return 0;
}

/* job_lock held: unlink and free a job that has reached null. */
static void
job_free_locked (struct job *job)
{
  struct job **pp;

  for (pp = &jobs; *pp != job; pp = &(*pp)->next)
    ;
  *pp = job->next;
  free (job->id);
  job->id = NULL;
  if (job->driver->free)
    job->driver->free (job);
}

/* Host lock held, job_lock not: run the driver's commit or abort, then
 * clean, and conclude.  The job's result is final by then.
 */
static void
finish (struct job *job)
{
  bool ok;

  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
    ok = job->ret == 0 && !job->cancelled;
  }
  if (ok && job->driver->commit)
    job->driver->commit (job);
  if (!ok && job->driver->abort)
    job->driver->abort (job);
  if (job->driver->clean)
    job->driver->clean (job);
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
    set_status (job, JOB_STATUS_CONCLUDED);
  }
  if (job->driver->concluded)
    job->driver->concluded (job);
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
  if (job->auto_dismiss) {
    set_status (job, JOB_STATUS_NULL);
    /* The thread is detached; nothing refers to the job after this. */
    job_free_locked (job);
  }
}

/* The job's thread: run, then take the job to pending (success) or
 * aborting, and finish it unless it waits for job-finalize.
 */
static void *
job_thread (void *opaque)
{
  struct job *job = opaque;
  int r = job->driver->run (job);
  bool wait_finalize;

  host.lock ();
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
    if (job->cancelled && r == 0)
      r = ECANCELED;
    job->ret = r;
    if (r == 0) {
      if (job->status != JOB_STATUS_WAITING)
        set_status (job, JOB_STATUS_WAITING);
      set_status (job, JOB_STATUS_PENDING);
    }
    else
      set_status (job, JOB_STATUS_ABORTING);
    wait_finalize = r == 0 && !job->auto_finalize;
  }
  if (!wait_finalize)
    finish (job);             /* may free JOB */
  else if (job->driver->pending)
    job->driver->pending (job);
  host.unlock ();
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
  running_threads--;
  pthread_cond_broadcast (&job_changed);
  return NULL;
}

int
job_start (struct job *job, struct qmp_error *err)
{
  pthread_attr_t attr;
  int r;

  pthread_attr_init (&attr);
  pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
    set_status (job, JOB_STATUS_RUNNING);
    r = pthread_create (&job->thread, &attr, job_thread, job);
    if (r == 0) {
      job->thread_started = true;
      running_threads++;
    }
    else {
      qmp_error (err, "Cannot start job '%s': %s", job->id, strerror (r));
      job->ret = r;
      set_status (job, JOB_STATUS_ABORTING);
    }
  }
  pthread_attr_destroy (&attr);
  /* Never ran: it ends as a job that failed at once would. */
  if (r != 0)
    finish (job);
  return r == 0 ? 0 : -1;
}

int
job_apply_verb (struct job *job, enum job_verb verb, struct qmp_error *err)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);

  if (job_verb_allowed (verb, job->status))
    return 0;
  qmp_error (err, "Job '%s' in state '%s' cannot accept command verb '%s'",
             job->id, status_names[job->status], verb_names[verb]);
  return -1;
}

int
job_user_cancel (struct job *job, struct qmp_error *err)
{
  bool finish_now;

  if (job_apply_verb (job, JOB_VERB_CANCEL, err) == -1)
    return -1;
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
    job->cancelled = true;
    job->user_paused = false;
    pthread_cond_broadcast (&job_changed);
    /* Waiting for job-finalize, or never started: no thread will end
     * it, so it ends here.
     */
    finish_now = job->status == JOB_STATUS_PENDING ||
      job->status == JOB_STATUS_CREATED;
    if (finish_now)
      set_status (job, JOB_STATUS_ABORTING);
  }
  if (finish_now)
    finish (job);
  return 0;
}

int
job_user_pause (struct job *job, struct qmp_error *err)
{
  if (job_apply_verb (job, JOB_VERB_PAUSE, err) == -1)
    return -1;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
  if (job->user_paused) {
    qmp_error (err, "Job is already paused");
    return -1;
  }
  job->user_paused = true;
  pthread_cond_broadcast (&job_changed);
  return 0;
}

int
job_user_resume (struct job *job, struct qmp_error *err)
{
  if (job_apply_verb (job, JOB_VERB_RESUME, err) == -1)
    return -1;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
  if (!job->user_paused) {
    qmp_error (err, "Can't resume a job that was not paused");
    return -1;
  }
  job->user_paused = false;
  pthread_cond_broadcast (&job_changed);
  if (job->driver->resumed)
    job->driver->resumed (job);
  return 0;
}

int
job_finalize (struct job *job, struct qmp_error *err)
{
  if (job_apply_verb (job, JOB_VERB_FINALIZE, err) == -1)
    return -1;
  finish (job);
  return 0;
}

int
job_dismiss (struct job *job, struct qmp_error *err)
{
  if (job_apply_verb (job, JOB_VERB_DISMISS, err) == -1)
    return -1;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
  set_status (job, JOB_STATUS_NULL);
  job_free_locked (job);
  return 0;
}

bool
job_is_cancelled (struct job *job)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
  return job->cancelled;
}

void
job_pause_point (struct job *job)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);

  if (!job->user_paused || job->cancelled)
    return;
  set_status (job, JOB_STATUS_PAUSED);
  while (job->user_paused && !job->cancelled)
    pthread_cond_wait (&job_changed, &job_lock);
  set_status (job, JOB_STATUS_RUNNING);
}

void
job_pause_on_error (struct job *job)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
  job->user_paused = true;
  pthread_cond_broadcast (&job_changed);
}

void
job_enter_waiting (struct job *job)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
  /* A pause asked for after the last pause point no longer applies. */
  job->user_paused = false;
  set_status (job, JOB_STATUS_WAITING);
}

void
job_progress (struct job *job, uint64_t done, uint64_t total)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
  job->progress_current = done;
  job->progress_total = total;
}

json_t *
job_describe (struct job *job)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
  json_t *info = json_pack ("{s:s,s:s,s:s,s:I,s:I}",
                            "id", job->id, "type", job->driver->type,
                            "status", status_names[job->status],
                            "current-progress",
                            (json_int_t) job->progress_current,
                            "total-progress",
                            (json_int_t) job->progress_total);

  if (job->status == JOB_STATUS_ABORTING ||
      (job->status == JOB_STATUS_CONCLUDED && job->ret != 0))
    json_object_set_new (info, "error",
                         json_string (job->ret == ECANCELED
                                      ? "Operation canceled"
                                      : strerror (job->ret)));
  return info;
}

void
jobs_cancel_all (void)
{
  struct job *j;

  struct job *next;

  host.lock ();
  for (j = jobs; j; j = next) {
    struct qmp_error err = { 0 };
    next = j->next;             /* J may be gone after the cancel */
    /* Concluded ones only wait for a dismiss; cancel the rest. */
    job_user_cancel (j, &err);
    qmp_error_clear (&err);
  }
  host.unlock ();
  /* The threads finish (and, auto-dismissed, free) their jobs; the
   * others stay concluded.
   */
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&job_lock);
  while (running_threads > 0)
    pthread_cond_wait (&job_changed, &job_lock);
}
