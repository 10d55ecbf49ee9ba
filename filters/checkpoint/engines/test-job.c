/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Unit tests of the job engine: QEMU's tables, and the event sequences
 * of section 4.6 of the reference for success, manual finalize and
 * dismiss, cancel, pause and resume, errors and bad IDs.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engines/job.h"
#include "test-check.h"


/* The host: a lock, and the JOB_STATUS_CHANGE events as one string. */
static pthread_mutex_t host_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t events_lock = PTHREAD_MUTEX_INITIALIZER;
static char events[1024];

static void lock (void) { pthread_mutex_lock (&host_lock); }
static void unlock (void) { pthread_mutex_unlock (&host_lock); }

static void
emit (const char *name, json_t *data)
{
  pthread_mutex_lock (&events_lock);
  if (strcmp (name, "JOB_STATUS_CHANGE") == 0) {
    strcat (events, json_string_value (json_object_get (data, "status")));
    strcat (events, " ");
  }
  pthread_mutex_unlock (&events_lock);
  json_decref (data);
}

static bool
events_are (const char *want)
{
  bool ok;

  pthread_mutex_lock (&events_lock);
  ok = strcmp (events, want) == 0;
  if (!ok)
    fprintf (stderr, "events: '%s', expected '%s'\n", events, want);
  events[0] = '\0';
  pthread_mutex_unlock (&events_lock);
  return ok;
}

/* A test job: runs until released (or cancelled), then ends with RET. */
struct test_job {
  struct job job;               /* first, as features embed it */
  bool release;                 /* atomic */
  int ret;
  unsigned commits, aborts, cleans, concluded;
  bool *freed;
};

static int
run (struct job *job)
{
  struct test_job *t = (struct test_job *) job;
  uint64_t n = 0;

  job_progress (job, 0, 1000);
  while (!__atomic_load_n (&t->release, __ATOMIC_SEQ_CST) &&
         !job_is_cancelled (job)) {
    job_pause_point (job);
    job_progress (job, ++n, 1000);
    usleep (500);
  }
  return job_is_cancelled (job) ? ECANCELED : t->ret;
}

static void t_commit (struct job *j) { ((struct test_job *) j)->commits++; }
static void t_abort (struct job *j) { ((struct test_job *) j)->aborts++; }
static void t_clean (struct job *j) { ((struct test_job *) j)->cleans++; }
static void t_concluded (struct job *j) { ((struct test_job *) j)->concluded++; }
static void t_free (struct job *j) { *((struct test_job *) j)->freed = true; }

static const struct job_driver driver = {
  .type = "backup", .run = run, .commit = t_commit, .abort = t_abort,
  .clean = t_clean, .concluded = t_concluded, .free = t_free,
};

/* The job's status, or "gone" once it reached null and was freed. */
static const char *
status_of (const char *id)
{
  static char buf[32];
  struct job *j;
  json_t *info;

  lock ();
  j = jobs_find (id);
  if (j == NULL)
    strcpy (buf, "gone");
  else {
    info = job_describe (j);
    snprintf (buf, sizeof buf, "%s",
              json_string_value (json_object_get (info, "status")));
    json_decref (info);
  }
  unlock ();
  return buf;
}

/* Wait (bounded, as a failure guard only) for ID to reach STATUS. */
static bool
wait_for (const char *id, const char *status)
{
  int i;

  for (i = 0; i < 10000; i++) {
    if (strcmp (status_of (id), status) == 0)
      return true;
    usleep (1000);
  }
  fprintf (stderr, "job %s: still %s, expected %s\n", id, status_of (id),
           status);
  return false;
}

static struct test_job *
start (const char *id, bool auto_finalize, bool auto_dismiss, bool *freed)
{
  struct test_job *t = calloc (1, sizeof *t);
  struct qmp_error err = { 0 };

  t->freed = freed;
  *freed = false;
  lock ();
  if (job_create (&t->job, &driver, id, auto_finalize, auto_dismiss,
                  &err) == -1 || job_start (&t->job, &err) == -1) {
    fprintf (stderr, "%s\n", err.desc);
    exit (EXIT_FAILURE);
  }
  unlock ();
  return t;
}

/* Run a verb under the host lock: 0, or -1 with the error's text. */
static int
verb (int (*fn) (struct job *, struct qmp_error *), const char *id,
      const char *want_error)
{
  struct qmp_error err = { 0 };
  int r;

  lock ();
  r = fn (jobs_find (id), &err);
  unlock ();
  if (r == -1 && (want_error == NULL || strcmp (err.desc, want_error) != 0)) {
    fprintf (stderr, "error: '%s', expected '%s'\n", err.desc,
             want_error ? want_error : "(none)");
    r = -2;
  }
  qmp_error_clear (&err);
  return r;
}

static void
test_tables (void)
{
  CHECK (job_verb_allowed (JOB_VERB_CANCEL, JOB_STATUS_PENDING));
  CHECK (!job_verb_allowed (JOB_VERB_CANCEL, JOB_STATUS_CONCLUDED));
  CHECK (!job_verb_allowed (JOB_VERB_PAUSE, JOB_STATUS_WAITING));
  CHECK (job_verb_allowed (JOB_VERB_SET_SPEED, JOB_STATUS_PAUSED));
  CHECK (job_verb_allowed (JOB_VERB_FINALIZE, JOB_STATUS_PENDING) &&
         !job_verb_allowed (JOB_VERB_FINALIZE, JOB_STATUS_RUNNING));
  CHECK (job_verb_allowed (JOB_VERB_DISMISS, JOB_STATUS_CONCLUDED) &&
         !job_verb_allowed (JOB_VERB_DISMISS, JOB_STATUS_NULL));
  CHECK (job_verb_allowed (JOB_VERB_COMPLETE, JOB_STATUS_READY) &&
         !job_verb_allowed (JOB_VERB_COMPLETE, JOB_STATUS_RUNNING));
  CHECK (job_transition_allowed (JOB_STATUS_RUNNING, JOB_STATUS_PAUSED));
  CHECK (!job_transition_allowed (JOB_STATUS_PAUSED, JOB_STATUS_WAITING));
  CHECK (!job_transition_allowed (JOB_STATUS_CONCLUDED, JOB_STATUS_RUNNING));
  CHECK (strcmp (job_status_name (JOB_STATUS_NULL), "null") == 0 &&
         strcmp (job_verb_name (JOB_VERB_SET_SPEED), "set-speed") == 0);
}

static void
test_auto_success (void)
{
  bool freed;
  struct test_job *t = start ("j1", true, true, &freed);

  CHECK (wait_for ("j1", "running"));
  __atomic_store_n (&t->release, true, __ATOMIC_SEQ_CST);
  CHECK (wait_for ("j1", "gone") && freed);
  CHECK (events_are ("created running waiting pending concluded null "));
  CHECK (t->commits == 1 && t->aborts == 0 && t->cleans == 1 &&
         t->concluded == 1);
  free (t);
}

static void
test_manual (void)
{
  bool freed;
  struct test_job *t = start ("j2", false, false, &freed);
  json_t *info;

  __atomic_store_n (&t->release, true, __ATOMIC_SEQ_CST);
  CHECK (wait_for ("j2", "pending"));
  CHECK (verb (job_user_pause, "j2", "Job 'j2' in state 'pending' cannot "
               "accept command verb 'pause'") == -1);
  CHECK (verb (job_dismiss, "j2", "Job 'j2' in state 'pending' cannot "
               "accept command verb 'dismiss'") == -1);
  CHECK (t->commits == 0);
  CHECK (verb (job_finalize, "j2", NULL) == 0);
  CHECK (wait_for ("j2", "concluded") && t->commits == 1 && !freed);
  lock ();
  info = job_describe (jobs_find ("j2"));
  unlock ();
  CHECK (json_object_get (info, "error") == NULL &&
         json_integer_value (json_object_get (info, "total-progress")) == 1000);
  json_decref (info);
  CHECK (verb (job_user_cancel, "j2", "Job 'j2' in state 'concluded' cannot "
               "accept command verb 'cancel'") == -1);
  CHECK (verb (job_dismiss, "j2", NULL) == 0 && freed);
  CHECK (events_are ("created running waiting pending concluded null "));
  free (t);
}

static void
test_cancel_and_pause (void)
{
  bool freed;
  struct test_job *t = start ("j3", true, false, &freed);
  json_t *info;

  CHECK (wait_for ("j3", "running"));
  CHECK (verb (job_user_resume, "j3",
               "Can't resume a job that was not paused") == -1);
  CHECK (verb (job_user_pause, "j3", NULL) == 0);
  CHECK (verb (job_user_pause, "j3", "Job is already paused") == -1);
  CHECK (wait_for ("j3", "paused"));
  CHECK (verb (job_user_resume, "j3", NULL) == 0);
  CHECK (wait_for ("j3", "running"));
  CHECK (verb (job_user_cancel, "j3", NULL) == 0);
  CHECK (wait_for ("j3", "concluded"));
  CHECK (t->aborts == 1 && t->commits == 0 && t->cleans == 1);
  lock ();
  info = job_describe (jobs_find ("j3"));
  unlock ();
  CHECK (strcmp (json_string_value (json_object_get (info, "error")),
                 "Operation canceled") == 0);
  json_decref (info);
  CHECK (verb (job_dismiss, "j3", NULL) == 0 && freed);
  CHECK (events_are ("created running paused running aborting concluded "
                     "null "));
  free (t);
}

static void
test_error_and_ids (void)
{
  struct qmp_error err = { 0 };
  struct test_job bad = { 0 };
  bool freed;
  struct test_job *t = start ("j4", true, false, &freed);
  json_t *info;

  lock ();
  CHECK (job_create (&bad.job, &driver, "0bad", true, true, &err) == -1 &&
         strcmp (err.desc, "Invalid job ID '0bad'") == 0);
  qmp_error_clear (&err);
  CHECK (job_create (&bad.job, &driver, "j4", true, true, &err) == -1 &&
         strcmp (err.desc, "Job ID 'j4' already in use") == 0);
  qmp_error_clear (&err);
  unlock ();

  t->ret = EIO;
  __atomic_store_n (&t->release, true, __ATOMIC_SEQ_CST);
  CHECK (wait_for ("j4", "concluded") && t->aborts == 1);
  lock ();
  info = job_describe (jobs_find ("j4"));
  unlock ();
  CHECK (strcmp (json_string_value (json_object_get (info, "error")),
                 "Input/output error") == 0);
  json_decref (info);
  CHECK (verb (job_dismiss, "j4", NULL) == 0 && freed);
  CHECK (events_are ("created running aborting concluded null "));
  free (t);
}

/* Cancel a job that was never started, and cancel all at shutdown. */
static void
test_cancel_all (void)
{
  struct qmp_error err = { 0 };
  struct test_job *c = calloc (1, sizeof *c);
  bool freed_c, freed;
  struct test_job *t;

  c->freed = &freed_c;
  freed_c = false;
  lock ();
  CHECK (job_create (&c->job, &driver, "c", true, true, &err) == 0);
  unlock ();
  CHECK (verb (job_user_cancel, "c", NULL) == 0 && freed_c);
  CHECK (events_are ("created aborting concluded null "));
  free (c);

  t = start ("j5", true, true, &freed);
  CHECK (wait_for ("j5", "running"));
  jobs_cancel_all ();
  CHECK (freed && jobs_first () == NULL);
  CHECK (events_are ("created running aborting concluded null "));
  free (t);
}

int
main (void)
{
  const struct job_host host = { lock, unlock, emit };

  jobs_set_host (&host);
  test_tables ();
  test_auto_success ();
  test_manual ();
  test_cancel_and_pause ();
  test_error_and_ids ();
  test_cancel_all ();
  return test_report ();
}
