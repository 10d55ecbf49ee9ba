/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* QEMU's push backup and job commands: drive-backup (also a
 * transaction action), query-jobs, query-block-jobs, job-* and
 * block-job-* (features/push-backup.h, engines/job.h).
 */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "engines/job.h"
#include "features/push-backup.h"
#include "qmp/actions.h"
#include "qmp/commands.h"

static bool
parse_enum (json_t *args, const char *name, const char *const *names,
            int *value, struct qmp_error *err)
{
  const char *s = qmp_arg_str (args, name, NULL);
  int i;

  if (s == NULL)
    return true;
  for (i = 0; names[i]; i++)
    if (strcmp (names[i], s) == 0) {
      *value = i;
      return true;
    }
  qmp_error (err, "Parameter '%s' does not accept value '%s'", name, s);
  return false;
}

/* Of QEMU's error policies only report (the default) is implemented. */
static bool
check_error_policy (json_t *args, const char *name, struct qmp_error *err)
{
  static const char *const policies[] = {
    "report", "ignore", "enospc", "stop", "auto", NULL
  };
  int p = 0;

  if (!parse_enum (args, name, policies, &p, err))
    return false;
  if (p != 0) {
    qmp_error (err, "%s '%s' is not supported yet", name, policies[p]);
    return false;
  }
  return true;
}

static json_t *
drive_backup_action (struct txn *t, json_t *args, struct qmp_error *err)
{
  static const char *const syncs[] = {
    "full", "incremental", "bitmap", "none", "top", NULL
  };
  static const char *const bitmap_modes[] = {
    "", "on-success", "never", "always", NULL
  };
  static const char *const modes[] = { "absolute-paths", "existing", NULL };
  struct push_backup_spec spec = {
    .job_id = qmp_arg_str (args, "job-id", NULL),
    .device = qmp_arg_str (args, "device", ""),
    .target = qmp_arg_str (args, "target", ""),
    .format = qmp_arg_str (args, "format", NULL),
    .bitmap = qmp_arg_str (args, "bitmap", NULL),
    .auto_finalize = qmp_arg_bool (args, "auto-finalize", true),
    .auto_dismiss = qmp_arg_bool (args, "auto-dismiss", true),
  };
  int sync = 0, bmode = 0, mode = 0;
  int64_t speed = qmp_arg_int (args, "speed", 0);

  if (!parse_enum (args, "sync", syncs, &sync, err) ||
      !parse_enum (args, "mode", modes, &mode, err))
    return NULL;
  if (json_object_get (args, "bitmap-mode") &&
      (!parse_enum (args, "bitmap-mode", bitmap_modes, &bmode, err) ||
       bmode == 0)) {
    if (bmode == 0 && err->class == NULL)
      qmp_error (err, "Parameter 'bitmap-mode' does not accept value ''");
    return NULL;
  }
  if (speed < 0) {
    qmp_error (err, "Invalid parameter 'speed'");
    return NULL;
  }
  if (qmp_arg_bool (args, "compress", false)) {
    qmp_error (err, "Compression is not supported for this drive %s",
               spec.device);
    return NULL;
  }
  if (!check_error_policy (args, "on-source-error", err) ||
      !check_error_policy (args, "on-target-error", err))
    return NULL;
  spec.sync = sync;
  spec.bitmap_mode = bmode;
  spec.existing = mode == 1;
  spec.speed = speed;
  if (push_backup_create (t, &spec, err) == -1)
    return NULL;
  return json_object ();
}

static const struct qmp_arg drive_backup_args[] = {
  { "job-id", QMP_STR, true },
  { "device", QMP_STR, false },
  { "target", QMP_STR, false },
  { "format", QMP_STR, true },
  { "mode", QMP_STR, true },
  { "sync", QMP_STR, false },
  { "speed", QMP_INT, true },
  { "bitmap", QMP_STR, true },
  { "bitmap-mode", QMP_STR, true },
  { "compress", QMP_BOOL, true },
  { "on-source-error", QMP_STR, true },
  { "on-target-error", QMP_STR, true },
  { "auto-finalize", QMP_BOOL, true },
  { "auto-dismiss", QMP_BOOL, true },
  { "filter-node-name", QMP_STR, true },
  { NULL }
};

static const struct txn_action actions[] = {
  /* drive-backup: copy DEVICE as it is now to TARGET in a job (QEMU's
   * drive-backup; reference section 4).
   * Arguments: job-id (required in practice: a node has no device
   * name), device (a node), target (a file path: created sparse, or
   * with mode "existing" opened as it is; or an nbd:// or nbd+unix://
   * URI), format? ("raw" only), mode?, sync ("full", "incremental",
   * "bitmap"; "none" and "top" are refused), speed? (bytes/s), bitmap?,
   * bitmap-mode? (QEMU's table), compress? (false only),
   * on-source-error? and on-target-error? ("report" only),
   * auto-finalize? (true only), auto-dismiss? (true),
   * filter-node-name? (ignored).
   * Returns: {}.  Events: JOB_STATUS_CHANGE, BLOCK_JOB_COMPLETED,
   * BLOCK_JOB_CANCELLED, BLOCK_JOB_ERROR.
   * Errors: QEMU's validation texts (reference 4.1); "Invalid job ID
   * 'X'", "Job ID 'X' already in use"; "Could not create 'PATH': ...",
   * "Could not open 'TARGET': ..."; a format other than raw; what is
   * not supported yet says so.
   */
  { "drive-backup", drive_backup_args, drive_backup_action },
  { NULL }
};

static json_t *
drive_backup_command (json_t *args, struct qmp_error *err)
{
  return action_run_one (&actions[0], args, err);
}

/* The job named by ARG: QEMU's "Job not found" or, for the block-job-*
 * commands, "Block job 'X' not found".
 */
static struct job *
find_job (json_t *args, const char *arg, bool block, struct qmp_error *err)
{
  const char *id = qmp_arg_str (args, arg, "");
  struct job *j = jobs_find (id);

  if (block && j && !job_is_push_backup (j))
    j = NULL;
  if (j == NULL) {
    if (block)
      qmp_error_set (err, QMP_ERROR_DEVICE_NOT_ACTIVE,
                     "Block job '%s' not found", id);
    else
      qmp_error_set (err, QMP_ERROR_DEVICE_NOT_ACTIVE, "Job not found");
  }
  return j;
}

static json_t *
ok_or_null (int r)
{
  return r == 0 ? json_object () : NULL;
}

static json_t *
query_jobs (json_t *args, struct qmp_error *err)
{
  json_t *list = json_array ();
  struct job *j;

  for (j = jobs_first (); j; j = j->next)
    json_array_append_new (list, job_describe (j));
  return list;
}

static json_t *
query_block_jobs (json_t *args, struct qmp_error *err)
{
  json_t *list = json_array ();
  struct job *j;

  for (j = jobs_first (); j; j = j->next)
    if (job_is_push_backup (j))
      json_array_append_new (list, push_backup_describe (j));
  return list;
}

#define JOB_VERB_COMMAND(fn, arg, block, call)                          \
  static json_t *                                                       \
  fn (json_t *args, struct qmp_error *err)                              \
  {                                                                     \
    struct job *j = find_job (args, arg, block, err);                   \
    return j ? ok_or_null (call) : NULL;                                \
  }

JOB_VERB_COMMAND (job_cancel, "id", false, job_user_cancel (j, err))
JOB_VERB_COMMAND (job_pause, "id", false, job_user_pause (j, err))
JOB_VERB_COMMAND (job_resume, "id", false, job_user_resume (j, err))
JOB_VERB_COMMAND (job_complete, "id", false,
                  job_apply_verb (j, JOB_VERB_COMPLETE, err))
JOB_VERB_COMMAND (job_finalize_cmd, "id", false, job_finalize (j, err))
JOB_VERB_COMMAND (job_dismiss_cmd, "id", false, job_dismiss (j, err))
JOB_VERB_COMMAND (block_job_cancel, "device", true, job_user_cancel (j, err))
JOB_VERB_COMMAND (block_job_pause, "device", true, job_user_pause (j, err))
JOB_VERB_COMMAND (block_job_resume, "device", true, job_user_resume (j, err))
JOB_VERB_COMMAND (block_job_complete, "device", true,
                  job_apply_verb (j, JOB_VERB_COMPLETE, err))
JOB_VERB_COMMAND (block_job_finalize, "id", true, job_finalize (j, err))
JOB_VERB_COMMAND (block_job_dismiss, "id", true, job_dismiss (j, err))
JOB_VERB_COMMAND (block_job_set_speed, "device", true,
                  push_backup_set_speed (j, qmp_arg_int (args, "speed", 0),
                                         err))

static const struct qmp_arg id_args[] = {
  { "id", QMP_STR, false },
  { NULL }
};

static const struct qmp_arg device_args[] = {
  { "device", QMP_STR, false },
  { NULL }
};

static const struct qmp_arg cancel_args[] = {
  { "device", QMP_STR, false },
  { "force", QMP_BOOL, true },
  { NULL }
};

static const struct qmp_arg speed_args[] = {
  { "device", QMP_STR, false },
  { "speed", QMP_INT, false },
  { NULL }
};

static const struct qmp_command commands[] = {
  { "drive-backup", drive_backup_args, drive_backup_command },
  /* query-jobs: every job, oldest first.
   * Returns: [{"id", "type", "status", "current-progress",
   * "total-progress", "error"?}].
   */
  { "query-jobs", NULL, query_jobs },
  /* query-block-jobs: the backup jobs.
   * Returns: [{"type", "device", "len", "offset", "busy", "paused",
   * "speed", "io-status", "ready", "status", "auto-finalize",
   * "auto-dismiss", "error"?}].
   */
  { "query-block-jobs", NULL, query_block_jobs },
  /* job-cancel, job-pause, job-resume, job-complete, job-finalize,
   * job-dismiss: QEMU's verbs (reference 4.4).
   * Arguments: id.  Returns: {}.
   * Errors: "Job not found" (DeviceNotActive); "Job 'X' in state 'S'
   * cannot accept command verb 'V'"; "Job is already paused"; "Can't
   * resume a job that was not paused".
   */
  { "job-cancel", id_args, job_cancel },
  { "job-pause", id_args, job_pause },
  { "job-resume", id_args, job_resume },
  { "job-complete", id_args, job_complete },
  { "job-finalize", id_args, job_finalize_cmd },
  { "job-dismiss", id_args, job_dismiss_cmd },
  /* block-job-cancel (device, force?), block-job-pause, -resume,
   * -complete (device), block-job-finalize, -dismiss (id),
   * block-job-set-speed (device, speed): the same verbs on backup
   * jobs.  Errors as above, but "Block job 'X' not found"; "Invalid
   * parameter 'speed'".
   */
  { "block-job-cancel", cancel_args, block_job_cancel },
  { "block-job-pause", device_args, block_job_pause },
  { "block-job-resume", device_args, block_job_resume },
  { "block-job-complete", device_args, block_job_complete },
  { "block-job-finalize", id_args, block_job_finalize },
  { "block-job-dismiss", id_args, block_job_dismiss },
  { "block-job-set-speed", speed_args, block_job_set_speed },
  { NULL }
};

static const struct qmp_command_set command_set = { "checkpoint", commands };

void
job_commands_register (void)
{
  actions_register (actions);
  qmp_register_commands (&command_set);
}
